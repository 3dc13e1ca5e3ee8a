//go:build linux

package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/broker"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func init() {
	proctest.Register("events-server", runEventsServer)
	proctest.Register("events-listen-only", runListenOnly)
	proctest.Register("events-client", runEventsClient)
}

// connEvent is one event a listener saw, as a child reports it (one proctest Result each,
// in the order the loop delivered them).
type connEvent struct {
	Conn  string
	Event string // accepted, connected, record, peer closed, peer died, closed, server gone, dial failed
	Data  string // record: its bytes; dial failed: the error
}

// endEvent names what an onEnd error means.
func endEvent(err error) string {
	switch {
	case err == io.EOF:
		return "peer closed"
	case errors.Is(err, ring.ErrPeerDead):
		return "peer died"
	case errors.Is(err, ring.ErrClosed):
		return "closed"
	}
	return "end: " + err.Error()
}

// eventsConfig configures the events roles: a server of Name in Dir, or a client of it
// that sends Msg once connected and closes its end after the reply when Close is set.
type eventsConfig struct {
	Dir   string
	Name  string
	Msg   string
	Close bool
	Wait  time.Duration // client: how long the dial may wait for a server (0: not at all)
}

// runEventsServer serves Name with one event loop: the listener and every connection on
// it, every event reported. A record "bye" is answered "BYE" and the server closes that
// connection; others come back in upper case.
func runEventsServer(c *proctest.Child) error {
	var cfg eventsConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return err
	}
	l, err := broker.Listen(cfg.Name, broker.Options{Dir: cfg.Dir})
	if err != nil {
		return err
	}
	defer l.Close()
	lp := loop.New(loop.Options{Wait: ring.Futex(), Check: 100 * time.Millisecond})
	report := func(e connEvent) { _ = c.Result(e) } // the loop's goroutine only
	_, err = l.AddTo(lp, func(conn *broker.Conn) {
		report(connEvent{Conn: conn.Name(), Event: "accepted"})
		_, err := conn.AddTo(lp, func(rec ring.Record) error {
			report(connEvent{Conn: conn.Name(), Event: "record", Data: string(rec.Data)})
			if err := conn.Send(context.Background(), 0, bytes.ToUpper(rec.Data)); err != nil {
				return err
			}
			if string(rec.Data) == "bye" {
				conn.Close()
			}
			return nil
		}, func(err error) {
			report(connEvent{Conn: conn.Name(), Event: endEvent(err)})
			conn.Close()
		})
		if err != nil {
			report(connEvent{Conn: conn.Name(), Event: "add failed", Data: err.Error()})
		}
	}, nil)
	if err != nil {
		return err
	}
	if err := lp.Post(func() { c.Point("listening") }); err != nil {
		return err
	}
	return lp.Run(context.Background()) // until killed
}

// runListenOnly binds Name and never accepts: dials wait on it.
func runListenOnly(c *proctest.Child) error {
	var cfg eventsConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return err
	}
	l, err := broker.Listen(cfg.Name, broker.Options{Dir: cfg.Dir})
	if err != nil {
		return err
	}
	defer l.Close()
	c.Point("listening")
	select {}
}

// runEventsClient dials Name with DialTo and reports every event its loop sees, until the
// connection ends or the dial fails; Point("replied") once the reply came.
func runEventsClient(c *proctest.Child) error {
	var cfg eventsConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return err
	}
	lp := loop.New(loop.Options{Wait: ring.Futex(), Check: 100 * time.Millisecond})
	report := func(e connEvent) { _ = c.Result(e) }
	ctx := context.Background()
	if cfg.Wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Wait)
		defer cancel()
	}
	err := broker.DialTo(ctx, lp, cfg.Name, broker.Options{Dir: cfg.Dir}, func(conn *broker.Conn, err error) {
		if err != nil {
			ev := connEvent{Event: "dial failed", Data: err.Error()}
			if errors.Is(err, broker.ErrNoServer) {
				ev.Event = "server gone"
			}
			report(ev)
			lp.Stop()
			return
		}
		report(connEvent{Conn: conn.Name(), Event: "connected"})
		_, err = conn.AddTo(lp, func(rec ring.Record) error {
			report(connEvent{Conn: conn.Name(), Event: "record", Data: string(rec.Data)})
			c.Point("replied")
			if cfg.Close {
				conn.Close()
			}
			return nil
		}, func(err error) {
			report(connEvent{Conn: conn.Name(), Event: endEvent(err)})
			conn.Close()
			lp.Stop()
		})
		if err == nil {
			err = conn.Send(context.Background(), 0, []byte(cfg.Msg))
		}
		if err != nil {
			report(connEvent{Conn: conn.Name(), Event: "failed", Data: err.Error()})
			lp.Stop()
		}
	})
	if err != nil {
		return err
	}
	c.Point("dialing")
	return lp.Run(context.Background())
}

// events reads child p's event reports from #from on until it has n of them.
func events(t *testing.T, p *proctest.Proc, from, n int) []connEvent {
	t.Helper()
	var out []connEvent
	for i := from; i < from+n; i++ {
		var e connEvent
		require.NoError(t, p.Result(i, &e, procTimeout), "event #%d; so far %v", i, out)
		out = append(out, e)
	}
	return out
}

func ev(conn, event, data string) connEvent { return connEvent{Conn: conn, Event: event, Data: data} }

// TestProcConnectionEvents: every connection event reaches its listener on an event loop,
// in order, server and clients each in a process of its own, the server driven by one
// loop (Listener.AddTo, Conn.AddTo), each client by its own (DialTo, Conn.AddTo):
//
//   - A client closes after its reply: the server sees accepted, the record, peer closed.
//   - A client is SIGKILLed: the server sees accepted, the record, peer died, and has
//     removed the connection's rings.
//   - The server closes a connection: its client sees connected, the reply, peer closed.
//   - The server is SIGKILLed: its client sees connected, the reply, peer died.
//   - A server that bound the name but never accepts dies while a dial waits: server gone.
//   - No server at all: server gone, at once.
//
// Then shm.GC (what shmctl gc runs) removes what the dead servers left: their accept rings.
func TestProcConnectionEvents(t *testing.T) {
	dir := testDir(t)
	start := func(role string, cfg eventsConfig) *proctest.Proc {
		cfg.Dir = dir
		return proctest.Start(t, role, proctest.Options{Args: jsonArgs(cfg)})
	}
	srv := start("events-server", eventsConfig{Name: "svc"})
	srv.WaitPoint("listening", procTimeout)
	seen := 0 // server events read so far
	serverEvents := func(n int) []connEvent {
		out := events(t, srv, seen, n)
		seen += n
		return out
	}

	// A: the client closes.
	a := start("events-client", eventsConfig{Name: "svc", Msg: "hello a", Close: true})
	aev := events(t, a, 0, 3)
	name := aev[0].Conn
	assert.Equal(t, []connEvent{ev(name, "connected", ""), ev(name, "record", "HELLO A"), ev(name, "closed", "")}, aev)
	require.NoError(t, a.Wait(procTimeout))
	assert.Equal(t, []connEvent{ev(name, "accepted", ""), ev(name, "record", "hello a"), ev(name, "peer closed", "")}, serverEvents(3))

	// B: the client dies.
	b := start("events-client", eventsConfig{Name: "svc", Msg: "hello b"})
	b.WaitPoint("replied", procTimeout)
	bev := events(t, b, 0, 2)
	name = bev[0].Conn
	assert.Equal(t, []connEvent{ev(name, "connected", ""), ev(name, "record", "HELLO B")}, bev)
	b.Kill()
	_ = b.Wait(procTimeout)
	assert.Equal(t, []connEvent{ev(name, "accepted", ""), ev(name, "record", "hello b"), ev(name, "peer died", "")}, serverEvents(3))
	assert.NotContains(t, strings.Join(names(t, dir), " "), name, "the server removed the dead client's rings")

	// C: the server closes.
	c := start("events-client", eventsConfig{Name: "svc", Msg: "bye"})
	cev := events(t, c, 0, 3)
	name = cev[0].Conn
	assert.Equal(t, []connEvent{ev(name, "connected", ""), ev(name, "record", "BYE"), ev(name, "peer closed", "")}, cev)
	require.NoError(t, c.Wait(procTimeout))
	assert.Equal(t, []connEvent{ev(name, "accepted", ""), ev(name, "record", "bye"), ev(name, "closed", "")}, serverEvents(3))

	// D: the server dies.
	d := start("events-client", eventsConfig{Name: "svc", Msg: "hello d"})
	d.WaitPoint("replied", procTimeout)
	assert.Equal(t, "accepted", serverEvents(1)[0].Event)
	srv.Kill()
	_ = srv.Wait(procTimeout)
	dev := events(t, d, 0, 3)
	name = dev[0].Conn
	assert.Equal(t, []connEvent{ev(name, "connected", ""), ev(name, "record", "HELLO D"), ev(name, "peer died", "")}, dev)
	require.NoError(t, d.Wait(procTimeout))

	// E: the server that would accept dies while the dial waits.
	mute := start("events-listen-only", eventsConfig{Name: "mute"})
	mute.WaitPoint("listening", procTimeout)
	e := start("events-client", eventsConfig{Name: "mute", Msg: "hello e", Wait: procTimeout})
	e.WaitPoint("dialing", procTimeout)
	require.Eventually(t, func() bool { // its rings exist: it has announced itself, or is about to
		for _, n := range names(t, dir) {
			if strings.HasPrefix(n, "mute.") {
				return true
			}
		}
		return false
	}, procTimeout, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	mute.Kill()
	_ = mute.Wait(procTimeout)
	eev := events(t, e, 0, 1)
	assert.Equal(t, "server gone", eev[0].Event, "%+v", eev[0])
	require.NoError(t, e.Wait(procTimeout))

	// F: no server.
	f := start("events-client", eventsConfig{Name: "nobody", Msg: "hello f"})
	fev := events(t, f, 0, 1)
	assert.Equal(t, "server gone", fev[0].Event, "%+v", fev[0])
	require.NoError(t, f.Wait(procTimeout))

	// Left: the accept rings of the two dead servers, nothing of any connection; shm.GC
	// (shmctl gc) removes them.
	assert.Equal(t, []string{"mute", "svc"}, names(t, dir))
	removed, err := shm.GC(shm.Options{Dir: dir}, false)
	require.NoError(t, err)
	assert.Len(t, removed, 2, fmt.Sprint(removed))
	assert.Empty(t, names(t, dir))
}
