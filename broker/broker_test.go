//go:build linux

package broker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/broker"
	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// testDir returns a private segment directory under /dev/shm, removed after the test.
func testDir(t testing.TB) string {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	d, err := os.MkdirTemp(base, "broker-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// names lists the segment names in dir.
func names(t testing.TB, dir string) []string {
	t.Helper()
	ns, err := shm.List(shm.Options{Dir: dir})
	require.NoError(t, err)
	return ns
}

// waitNames waits until dir holds exactly want (sorted).
func waitNames(t testing.TB, dir string, want []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := names(t, dir)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("segments in %s: %v, want %v", dir, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pair listens and dials in one process and returns both ends.
func pair(t testing.TB, opts broker.Options) (*broker.Listener, *broker.Conn, *broker.Conn) {
	t.Helper()
	l, err := broker.Listen("svc", opts)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		c   *broker.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := broker.Dial(ctx, "svc", opts)
		ch <- res{c, err}
	}()
	sc, err := l.Accept(ctx)
	require.NoError(t, err)
	r := <-ch
	require.NoError(t, r.err)
	t.Cleanup(func() { sc.Close(); r.c.Close() })
	return l, r.c, sc
}

// TestConnLifecycle: a connection carries records both ways, its rings are named after the
// server, the client's Close ends the server's stream with io.EOF, and once both sides and
// the listener closed the directory is empty.
func TestConnLifecycle(t *testing.T) {
	dir := testDir(t)
	opts := broker.Options{Dir: dir}
	l, cc, sc := pair(t, opts)
	assert.Equal(t, []string{"svc", cc.Name() + ".c2s", cc.Name() + ".s2c"}, names(t, dir))
	assert.Equal(t, cc.Name(), sc.Name())

	ctx := context.Background()
	require.NoError(t, cc.Send(ctx, 7, []byte("ping")))
	rec, err := sc.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint32(7), rec.Type)
	assert.Equal(t, "ping", string(rec.Data))
	sc.Release()
	require.NoError(t, sc.Send(ctx, 8, []byte("pong")))
	rec, err = cc.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, "pong", string(rec.Data))
	cc.Release()

	require.NoError(t, cc.Send(ctx, 9, []byte("last")))
	require.NoError(t, cc.Close())
	assert.Equal(t, []string{"svc"}, names(t, dir), "the first Close removes the connection's names")
	rec, err = sc.Recv(ctx)
	require.NoError(t, err, "what was sent before Close is delivered")
	assert.Equal(t, "last", string(rec.Data))
	sc.Release()
	_, err = sc.Recv(ctx)
	assert.Equal(t, io.EOF, err)
	require.NoError(t, sc.Close())
	require.NoError(t, l.Close())
	assert.Empty(t, names(t, dir))
	_, err = l.Accept(ctx)
	assert.ErrorIs(t, err, broker.ErrClosed)
}

// TestListenInUse: a second server on a live server's name is refused; once the first
// closes, the name can be bound again.
func TestListenInUse(t *testing.T) {
	opts := broker.Options{Dir: testDir(t)}
	l, err := broker.Listen("svc", opts)
	require.NoError(t, err)
	_, err = broker.Listen("svc", opts)
	assert.ErrorIs(t, err, broker.ErrInUse)
	assert.ErrorIs(t, err, shm.ErrBusy)
	require.NoError(t, l.Close())
	l, err = broker.Listen("svc", opts)
	require.NoError(t, err)
	l.Close()
}

// TestDialNoServer: no server is ErrNoServer (matching shm.ErrNotExist) at once with a
// context that cannot end, and after the deadline with one that can; a dial that waits is
// served by a server that comes later.
func TestDialNoServer(t *testing.T) {
	dir := testDir(t)
	opts := broker.Options{Dir: dir}
	start := time.Now()
	_, err := broker.Dial(context.Background(), "svc", opts)
	assert.ErrorIs(t, err, broker.ErrNoServer)
	assert.ErrorIs(t, err, shm.ErrNotExist)
	assert.Less(t, time.Since(start), 100*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = broker.Dial(ctx, "svc", opts)
	assert.ErrorIs(t, err, broker.ErrNoServer)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, names(t, dir))

	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		c, err := broker.Dial(ctx, "svc", opts)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	time.Sleep(30 * time.Millisecond)
	l, err := broker.Listen("svc", opts)
	require.NoError(t, err)
	defer l.Close()
	sc, err := l.Accept(ctx)
	require.NoError(t, err)
	sc.Close()
	require.NoError(t, <-done)
}

// TestAcceptSkipsGoneClient: an announcement whose client closed before the server got to
// it is skipped, its rings removed, and the next client is accepted.
func TestAcceptSkipsGoneClient(t *testing.T) {
	dir := testDir(t)
	opts := broker.Options{Dir: dir}
	l, err := broker.Listen("svc", opts)
	require.NoError(t, err)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A dial whose context ends before anyone accepts: it announces, then gives up.
	short, cancelShort := context.WithTimeout(ctx, 150*time.Millisecond)
	_, err = broker.Dial(short, "svc", opts)
	cancelShort()
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, []string{"svc"}, names(t, dir))
	go func() {
		c, err := broker.Dial(ctx, "svc", opts)
		if err == nil {
			c.Send(ctx, 1, []byte("hi"))
			c.Close()
		}
	}()
	sc, err := l.Accept(ctx)
	require.NoError(t, err)
	defer sc.Close()
	rec, err := sc.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, "hi", string(rec.Data))
	sc.Release()
	assert.Equal(t, uint64(1), l.Skipped())
}

func xorReply(req []byte) []byte {
	out := make([]byte, len(req))
	for i, b := range req {
		out[i] = b ^ 0xFF
	}
	return out
}

// TestCallManyGoroutines: 16 goroutines, 300 calls each, all in flight together on one
// connection served by 4 workers; every reply is its own call's. Handler errors and panics
// come back as *RemoteError, and the server goes on.
func TestCallManyGoroutines(t *testing.T) {
	_, cc, sc := pair(t, broker.Options{Dir: testDir(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- broker.Serve(ctx, sc, func(req []byte) ([]byte, error) {
			switch string(req) {
			case "fail":
				return nil, errors.New("no such thing")
			case "panic":
				panic("boom")
			}
			return xorReply(req), nil
		}, 4)
	}()
	cl := broker.NewClient(cc)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 300 {
				req := fmt.Appendf(nil, "g%d-call%d-%s", g, i, make([]byte, i%50))
				reply, err := cl.Call(ctx, req)
				if !assert.NoError(t, err) {
					return
				}
				assert.Equal(t, xorReply(req), reply)
			}
		})
	}
	wg.Wait()
	_, err := cl.Call(ctx, []byte("fail"))
	var re *broker.RemoteError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "no such thing", re.Msg)
	_, err = cl.Call(ctx, []byte("panic"))
	require.ErrorAs(t, err, &re)
	assert.Contains(t, re.Msg, "boom")
	reply, err := cl.Call(ctx, []byte{1})
	require.NoError(t, err)
	assert.Equal(t, []byte{0xFE}, reply)

	require.NoError(t, cl.Close())
	assert.NoError(t, <-served, "Serve returns nil when the client closes")
	_, err = cl.Call(ctx, []byte{1})
	assert.ErrorIs(t, err, broker.ErrClientClosed)
}

// TestCallDeadlineLateReply: a call whose deadline passes returns the context's error; its
// reply, arriving later, is dropped and counted, and the next call gets its own reply.
func TestCallDeadlineLateReply(t *testing.T) {
	_, cc, sc := pair(t, broker.Options{Dir: testDir(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go broker.Serve(ctx, sc, func(req []byte) ([]byte, error) {
		if string(req) == "slow" {
			time.Sleep(200 * time.Millisecond)
		}
		return req, nil
	}, 2)
	cl := broker.NewClient(cc)
	defer cl.Close()
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err := cl.Call(short, []byte("slow"))
	cancelShort()
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	// Cancellation works the same way.
	cctx, cancelCall := context.WithCancel(ctx)
	time.AfterFunc(20*time.Millisecond, cancelCall)
	_, err = cl.Call(cctx, []byte("slow"))
	assert.ErrorIs(t, err, context.Canceled)

	for i := range 20 {
		req := fmt.Appendf(nil, "after-%d", i)
		reply, err := cl.Call(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, string(req), string(reply))
	}
	// Replies are read while calls are in flight: one more call, after the slow replies
	// were written, reads them before its own.
	time.Sleep(300 * time.Millisecond)
	_, err = cl.Call(ctx, []byte("last"))
	require.NoError(t, err)
	assert.Equal(t, uint64(2), cl.Late())
}

// TestCallAllocs measures allocations per call, client and server in one process, on the
// append paths (CallAppend into a buffer with room, ServeAppend with one worker and with
// four): none with a context that cannot end, and none with a long-lived one that can,
// also when every wait sleeps in the kernel (futex waits on both sides: the ring's context
// wake-up stays registered).
func TestCallAllocs(t *testing.T) {
	for _, tc := range []struct {
		wait    ring.Wait
		workers int
	}{{ring.Adaptive(0), 1}, {ring.Futex(), 1}, {ring.Adaptive(0), 4}} {
		wait := tc.wait
		t.Run(fmt.Sprintf("%s/workers=%d", wait.Name(), tc.workers), func(t *testing.T) {
			dir := testDir(t)
			_, cc, sc := pair(t, broker.Options{Dir: dir, Wait: wait})
			replies, err := shm.Open(cc.Name()+".s2c", shm.Options{Dir: dir}) // to read its counters
			require.NoError(t, err)
			defer replies.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go broker.ServeAppend(ctx, sc, func(dst, req []byte) ([]byte, error) { return append(dst, req...), nil }, tc.workers)
			cl := broker.NewClient(cc)
			defer cl.Close()
			req := make([]byte, 64)
			buf := make([]byte, 0, 64)
			measure := func(ctx context.Context) float64 {
				for range 1000 { // warm the pools and the map
					_, err := cl.CallAppend(ctx, buf[:0], req)
					require.NoError(t, err)
				}
				return testing.AllocsPerRun(2000, func() {
					if _, err := cl.CallAppend(ctx, buf[:0], req); err != nil {
						t.Fatal(err)
					}
				})
			}
			allocs := measure(context.Background())
			t.Logf("allocations per call (both sides, one process), context.Background: %.2f", allocs)
			assert.Zero(t, allocs)
			before, err := ring.ReadStats(replies)
			require.NoError(t, err)
			allocs = measure(ctx)
			after, err := ring.ReadStats(replies)
			require.NoError(t, err)
			t.Logf("allocations per call, a long-lived cancellable context: %.2f (the caller slept in the kernel %d times in 3000 calls)",
				allocs, after.Readers.FutexWaits-before.Readers.FutexWaits)
			assert.Zero(t, allocs)
			if wait.Name() == "futex" {
				assert.Greater(t, after.Readers.FutexWaits-before.Readers.FutexWaits, uint64(300), "futex waits must sleep")
			}
		})
	}
}

// TestConnErrorsAreTheRings: the raw ends are exposed, and a Conn's Send after its Close is
// the ring's ErrClosed.
func TestConnErrorsAreTheRings(t *testing.T) {
	_, cc, _ := pair(t, broker.Options{Dir: testDir(t)})
	assert.NotNil(t, cc.Writer())
	assert.NotNil(t, cc.Reader())
	cc.Close()
	assert.ErrorIs(t, cc.Send(context.Background(), 1, nil), ring.ErrClosed)
}

// TestAcceptOnLoop: a server driven by an event loop: the listener's accept ring and every
// accepted connection's reader on one loop goroutine; each client gets its reply, every
// connection's end (io.EOF) reaches its onEnd after its accept, and the listener's
// Close ends the accept source.
func TestAcceptOnLoop(t *testing.T) {
	dir := testDir(t)
	opts := broker.Options{Dir: dir}
	l, err := broker.Listen("svc", opts)
	require.NoError(t, err)
	lp := loop.New(loop.Options{Wait: ring.Futex()})
	var events []string // loop goroutine only, read after Run returned
	acceptEnded := make(chan error, 1)
	_, err = l.AddTo(lp, func(c *broker.Conn) {
		events = append(events, "accepted "+c.Name())
		_, err := lp.Add(c.Reader(), func(rec ring.Record) error {
			return c.Send(context.Background(), rec.Type, bytes.ToUpper(rec.Data))
		}, func(err error) {
			events = append(events, fmt.Sprintf("ended %s: %v", c.Name(), err))
			c.Close()
		})
		require.NoError(t, err)
	}, func(err error) { acceptEnded <- err })
	require.NoError(t, err)
	ran := make(chan error, 1)
	go func() { ran <- lp.Run(context.Background()) }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var want []string
	for i := range 3 {
		c, err := broker.Dial(ctx, "svc", opts)
		require.NoError(t, err)
		require.NoError(t, c.Send(ctx, uint32(i), fmt.Appendf(nil, "hi %d", i)))
		rec, err := c.Recv(ctx)
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("HI %d", i), string(rec.Data))
		c.Release()
		require.NoError(t, c.Close())
		want = append(want, "accepted "+c.Name(), "ended "+c.Name()+": EOF")
	}
	require.Eventually(t, func() bool { return len(names(t, dir)) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, l.Close())
	assert.ErrorIs(t, <-acceptEnded, ring.ErrClosed)
	lp.Stop()
	require.NoError(t, <-ran)
	// Per connection in order; the loop may see one's end and the next one's accept in
	// either order.
	assert.ElementsMatch(t, want, events)
	for i := 0; i < len(want); i += 2 {
		assert.Less(t, slices.Index(events, want[i]), slices.Index(events, want[i+1]))
	}
	assert.Empty(t, names(t, dir))
}

// gaveUp is a context whose deadline passes right after Call's check before sending (its
// first Err is nil, every later one DeadlineExceeded) and whose Done channel never says so:
// a caller with it sends its request and gives up before reading anything, as one whose
// deadline ends between the two would.
type gaveUp struct {
	context.Context
	checked *atomic.Bool
}

func newGaveUp() gaveUp { return gaveUp{context.Background(), new(atomic.Bool)} }

func (g gaveUp) Err() error {
	if !g.checked.Swap(true) {
		return nil
	}
	return context.DeadlineExceeded
}

// TestLateRepliesDoNotWedge: callers that give up right after sending leave their replies
// in the reply ring; with small rings those fill it, the server stops reading, the request
// ring fills, and a new caller's send waits: it must read the late replies meanwhile, or
// nobody would and it would wait until its deadline.
func TestLateRepliesDoNotWedge(t *testing.T) {
	_, cc, sc := pair(t, broker.Options{Dir: testDir(t), RingSize: 4096})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go broker.Serve(ctx, sc, func(req []byte) ([]byte, error) { return req, nil }, 1)
	cl := broker.NewClient(cc)
	defer cl.Close()
	req := make([]byte, 1000)
	for range 20 {
		_, err := cl.Call(newGaveUp(), req)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		time.Sleep(2 * time.Millisecond) // the server takes it and replies
	}
	time.Sleep(100 * time.Millisecond) // the server fills the reply ring and stops
	call, cancelCall := context.WithTimeout(ctx, 2*time.Second)
	defer cancelCall()
	start := time.Now()
	reply, err := cl.Call(call, req)
	t.Logf("late %d, call took %v", cl.Late(), time.Since(start))
	require.NoError(t, err)
	assert.Equal(t, req, reply)
	assert.Positive(t, cl.Late())
}

// TestDialToEdges: DialTo refuses an invalid name at once; a dial whose loop stopped before
// the outcome arrived closes its connection (the server's end sees io.EOF) and calls no
// listener; a dial whose context ends while no server exists reports ErrNoServer and the
// context's error.
func TestDialToEdges(t *testing.T) {
	dir := testDir(t)
	opts := broker.Options{Dir: dir}
	lp := loop.New(loop.Options{})
	assert.ErrorIs(t, broker.DialTo(context.Background(), lp, "bad/name", opts, nil), shm.ErrInvalidName)

	l, err := broker.Listen("svc", opts)
	require.NoError(t, err)
	defer l.Close()
	lp.Stop()
	called := make(chan struct{}, 1)
	require.NoError(t, broker.DialTo(context.Background(), lp, "svc", opts, func(*broker.Conn, error) { called <- struct{}{} }))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, err := l.Accept(ctx)
	require.NoError(t, err)
	defer sc.Close()
	_, err = sc.Recv(ctx)
	assert.Equal(t, io.EOF, err, "the dial's connection was closed")
	select {
	case <-called:
		t.Fatal("onConnect ran on a stopped loop")
	default:
	}

	lp2 := loop.New(loop.Options{})
	got := make(chan error, 1)
	wait, cancelWait := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelWait()
	require.NoError(t, broker.DialTo(wait, lp2, "nobody", opts, func(c *broker.Conn, err error) {
		assert.Nil(t, c)
		got <- err
		lp2.Stop()
	}))
	require.NoError(t, lp2.Run(ctx))
	err = <-got
	assert.ErrorIs(t, err, broker.ErrNoServer)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}
