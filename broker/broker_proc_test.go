//go:build linux

package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/broker"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
)

// Servers and clients run in child processes of the test binary (proctest); the parent
// starts them, kills them where a test says so, and looks at the segment directory.

func TestMain(m *testing.M) {
	proctest.Register("broker-server", runServer)
	proctest.Register("broker-client", runClient)
	proctest.Main(m)
}

const procTimeout = 90 * time.Second

// serverConfig tells a server child what to do: serve Conns connections (0: until killed)
// with Workers handler goroutines each, then close its listener and exit.
type serverConfig struct {
	Dir     string
	Name    string
	Conns   int
	Workers int
}

// clientConfig tells a client child what to do: Calls calls from each of Goroutines
// goroutines, each request naming the client, goroutine and call. With Slow, it first
// starts a call the server sleeps in, and reports Point("slow-sent").
type clientConfig struct {
	Dir        string
	Name       string
	ID         int
	Goroutines int
	Calls      int
	Slow       bool
}

// connResult is what a server child reports for each connection it served.
type connResult struct {
	Conn     string
	Err      string
	PeerDead bool
}

// clientResult is what a client child reports.
type clientResult struct {
	Calls int
	Late  uint64
}

func jsonArgs(v any) []string {
	b, _ := json.Marshal(v)
	return []string{string(b)}
}

// handle is the servers' handler: "sleep:D" sleeps D (and reports Point("handling") through
// point), "fail:MSG" fails, anything else comes back with every byte inverted.
func handle(point func(string)) broker.Handler {
	return func(req []byte) ([]byte, error) {
		s := string(req)
		if d, ok := strings.CutPrefix(s, "sleep:"); ok {
			dur, err := time.ParseDuration(d)
			if err != nil {
				return nil, err
			}
			point("handling")
			time.Sleep(dur)
			return req, nil
		}
		if msg, ok := strings.CutPrefix(s, "fail:"); ok {
			return nil, errors.New(msg)
		}
		return xorReply(req), nil
	}
}

func runServer(c *proctest.Child) error {
	var cfg serverConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return err
	}
	var mu sync.Mutex // the Child is for one goroutine at a time
	point := func(name string) { mu.Lock(); defer mu.Unlock(); c.Point(name) }
	l, err := broker.Listen(cfg.Name, broker.Options{Dir: cfg.Dir})
	if err != nil {
		return err
	}
	defer l.Close()
	point("listening")
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for n := 0; cfg.Conns == 0 || n < cfg.Conns; n++ {
		conn, err := l.Accept(ctx)
		if err != nil {
			return err
		}
		wg.Go(func() {
			defer conn.Close()
			err := broker.Serve(ctx, conn, handle(point), cfg.Workers)
			r := connResult{Conn: conn.Name(), PeerDead: errors.Is(err, ring.ErrPeerDead)}
			if err != nil {
				r.Err = err.Error()
			}
			mu.Lock()
			defer mu.Unlock()
			c.Result(r)
		})
	}
	wg.Wait()
	return nil
}

func runClient(c *proctest.Child) error {
	var cfg clientConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	conn, err := broker.Dial(ctx, cfg.Name, broker.Options{Dir: cfg.Dir})
	if err != nil {
		return err
	}
	cl := broker.NewClient(conn)
	defer cl.Close()
	if cfg.Slow {
		go cl.Call(ctx, []byte("sleep:30s"))
		c.Point("slow-sent")
	}
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Goroutines)
	for g := range cfg.Goroutines {
		wg.Go(func() {
			var reply []byte
			for i := range cfg.Calls {
				req := fmt.Appendf(nil, "client %d goroutine %d call %d %s", cfg.ID, g, i, strings.Repeat("x", i%64))
				var err error
				reply, err = cl.CallAppend(ctx, reply[:0], req)
				if err != nil {
					errs <- fmt.Errorf("call %d/%d: %w", g, i, err)
					return
				}
				if want := xorReply(req); string(reply) != string(want) {
					errs <- fmt.Errorf("call %d/%d: reply %q is not the request's", g, i, xorReply(reply))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if _, err := cl.Call(ctx, []byte("fail:nope")); err == nil || err.Error() != (&broker.RemoteError{Msg: "nope"}).Error() {
		return fmt.Errorf("a failing call returned %v", err)
	}
	return c.Result(clientResult{Calls: cfg.Goroutines * cfg.Calls, Late: cl.Late()})
}

// TestProcManyClients: one server process, 8 client processes of 4 goroutines each, 1,000
// calls per client (100 with -short), every reply checked against its request; then every
// connection ended cleanly (io.EOF at the server), and nothing is left in the directory.
func TestProcManyClients(t *testing.T) {
	dir := testDir(t)
	const clients = 8
	calls := 1000
	if testing.Short() {
		calls = 100
	}
	srv := proctest.Start(t, "broker-server", proctest.Options{Args: jsonArgs(serverConfig{Dir: dir, Name: "svc", Conns: clients, Workers: 4})})
	srv.WaitPoint("listening", procTimeout)
	var procs []*proctest.Proc
	for i := range clients {
		procs = append(procs, proctest.Start(t, "broker-client", proctest.Options{
			Args: jsonArgs(clientConfig{Dir: dir, Name: "svc", ID: i, Goroutines: 4, Calls: calls / 4})}))
	}
	for i, p := range procs {
		var r clientResult
		require.NoError(t, p.Result(0, &r, procTimeout), "client %d", i)
		assert.Equal(t, calls, r.Calls)
		assert.Zero(t, r.Late)
		require.NoError(t, p.Wait(procTimeout))
	}
	seen := map[string]bool{}
	for i := range clients {
		var r connResult
		require.NoError(t, srv.Result(i, &r, procTimeout))
		assert.Empty(t, r.Err, "connection %s", r.Conn)
		seen[r.Conn] = true
	}
	assert.Len(t, seen, clients)
	require.NoError(t, srv.Wait(procTimeout))
	assert.Empty(t, names(t, dir))
}

// TestProcClientKilled: a client SIGKILLed while the server runs its call: the server's
// connection ends with ring.ErrPeerDead and its rings are removed, while another client's
// 1,000 calls all succeed.
func TestProcClientKilled(t *testing.T) {
	dir := testDir(t)
	calls := 1000
	if testing.Short() {
		calls = 200
	}
	srv := proctest.Start(t, "broker-server", proctest.Options{Args: jsonArgs(serverConfig{Dir: dir, Name: "svc", Conns: 2, Workers: 2})})
	srv.WaitPoint("listening", procTimeout)
	victim := proctest.Start(t, "broker-client", proctest.Options{
		Args: jsonArgs(clientConfig{Dir: dir, Name: "svc", ID: 0, Goroutines: 1, Calls: 1 << 30, Slow: true})})
	victim.WaitPoint("slow-sent", procTimeout)
	srv.WaitPoint("handling", procTimeout)
	other := proctest.Start(t, "broker-client", proctest.Options{
		Args: jsonArgs(clientConfig{Dir: dir, Name: "svc", ID: 1, Goroutines: 4, Calls: calls / 4})})
	time.Sleep(20 * time.Millisecond) // mid-stream for both
	victim.Kill()
	require.Error(t, victim.Wait(procTimeout))
	killed := time.Now()

	var cr clientResult
	require.NoError(t, other.Result(0, &cr, procTimeout))
	assert.Equal(t, calls, cr.Calls)
	require.NoError(t, other.Wait(procTimeout))

	// The server reports each connection as it ends, in whatever order.
	var dead, clean int
	for i := range 2 {
		var r connResult
		require.NoError(t, srv.Result(i, &r, procTimeout))
		switch {
		case r.PeerDead:
			dead++
			t.Logf("server's Serve returned ErrPeerDead %v after the kill", time.Since(killed))
			for _, n := range names(t, dir) {
				assert.False(t, strings.HasPrefix(n, r.Conn+"."), "the dead client's ring %s is still there", n)
			}
		case r.Err == "":
			clean++
		default:
			t.Errorf("connection %s: %s", r.Conn, r.Err)
		}
	}
	assert.Equal(t, 1, dead, "the killed client's connection ends with ErrPeerDead")
	assert.Equal(t, 1, clean, "the other client's ends cleanly")
	require.NoError(t, srv.Wait(procTimeout))
	assert.Empty(t, names(t, dir), "the dead client's rings were removed by the server")
}

// TestProcServerKilled: the server SIGKILLed while 8 calls of this process wait in its
// handler (30 s deadline each): every call returns ring.ErrPeerDead within a second
// (measured: the rings' two liveness checks, ~200 ms), the connection's rings are removed
// by the client, and a server restarted under the same name takes the name over and is
// dialled and called again.
func TestProcServerKilled(t *testing.T) {
	dir := testDir(t)
	opts := broker.Options{Dir: dir}
	srv := proctest.Start(t, "broker-server", proctest.Options{Args: jsonArgs(serverConfig{Dir: dir, Name: "svc", Workers: 8})})
	srv.WaitPoint("listening", procTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	conn, err := broker.Dial(ctx, "svc", opts)
	require.NoError(t, err)
	cl := broker.NewClient(conn)
	defer cl.Close()
	reply, err := cl.Call(ctx, []byte{0x0F})
	require.NoError(t, err)
	assert.Equal(t, []byte{0xF0}, reply)

	const callers = 8
	errs := make(chan error, callers)
	for range callers {
		go func() {
			callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_, err := cl.Call(callCtx, []byte("sleep:30s"))
			errs <- err
		}()
	}
	srv.WaitPoint("handling", procTimeout)
	time.Sleep(50 * time.Millisecond) // let every call reach the server
	srv.Kill()
	killed := time.Now()
	var slowest time.Duration
	for range callers {
		err := <-errs
		slowest = time.Since(killed)
		assert.ErrorIs(t, err, ring.ErrPeerDead)
	}
	t.Logf("all %d callers got ErrPeerDead %v after the kill", callers, slowest)
	assert.Less(t, slowest, time.Second)
	_, err = cl.Call(ctx, []byte{1})
	assert.ErrorIs(t, err, ring.ErrPeerDead, "later calls fail at once too")
	require.Error(t, srv.Wait(procTimeout))
	assert.Equal(t, []string{"svc"}, names(t, dir), "the connection's rings are gone; the dead server's accept ring stays for its successor")

	// No live server: Dial says so at once, though the accept ring is there.
	_, err = broker.Dial(context.Background(), "svc", opts)
	assert.ErrorIs(t, err, broker.ErrNoServer)

	srv2 := proctest.Start(t, "broker-server", proctest.Options{Args: jsonArgs(serverConfig{Dir: dir, Name: "svc", Conns: 1, Workers: 1})})
	srv2.WaitPoint("listening", procTimeout)
	conn2, err := broker.Dial(ctx, "svc", opts)
	require.NoError(t, err)
	cl2 := broker.NewClient(conn2)
	reply, err = cl2.Call(ctx, []byte{0x0F})
	require.NoError(t, err)
	assert.Equal(t, []byte{0xF0}, reply)
	require.NoError(t, cl2.Close())
	var r connResult
	require.NoError(t, srv2.Result(0, &r, procTimeout))
	assert.Empty(t, r.Err)
	require.NoError(t, srv2.Wait(procTimeout))
	assert.Empty(t, names(t, dir))
}

// TestProcListenInUseAcrossProcesses: a live server in another process holds the name
// (ErrInUse); once it is SIGKILLed, Listen takes its accept ring over.
func TestProcListenInUseAcrossProcesses(t *testing.T) {
	dir := testDir(t)
	srv := proctest.Start(t, "broker-server", proctest.Options{Args: jsonArgs(serverConfig{Dir: dir, Name: "svc", Workers: 1})})
	srv.WaitPoint("listening", procTimeout)
	_, err := broker.Listen("svc", broker.Options{Dir: dir})
	assert.ErrorIs(t, err, broker.ErrInUse)
	srv.Kill()
	require.Error(t, srv.Wait(procTimeout))
	l, err := broker.Listen("svc", broker.Options{Dir: dir})
	require.NoError(t, err, "a dead server's name is taken over")
	require.NoError(t, l.Close())
	assert.Empty(t, names(t, dir))
}
