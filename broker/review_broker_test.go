//go:build linux

package broker

// Review tests. Internal (package broker) so that they can play a misbehaving peer or stop a
// server between two steps of Accept.
import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func reviewDir(t testing.TB) string {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	d, err := os.MkdirTemp(base, "broker-review-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func reviewNames(t testing.TB, dir string) []string {
	t.Helper()
	ns, err := shm.List(shm.Options{Dir: dir})
	require.NoError(t, err)
	return ns
}

// announce writes a dial record naming base into server name's accept ring, as any local
// process that can open the accept ring can.
func announce(t testing.TB, name, base string, opts Options) {
	t.Helper()
	seg, err := shm.Open(name, opts.shm())
	require.NoError(t, err)
	defer seg.Close()
	w, err := ring.NewMPMCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.Write(context.Background(), typeDial, []byte(base)))
}

func reviewPair(t testing.TB, opts Options) (*Listener, *Conn, *Conn) {
	t.Helper()
	l, err := Listen("svc", opts)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := make(chan *Conn, 1)
	go func() {
		c, err := Dial(ctx, "svc", opts)
		assert.NoError(t, err)
		ch <- c
	}()
	sc, err := l.Accept(ctx)
	require.NoError(t, err)
	cc := <-ch
	require.NotNil(t, cc)
	t.Cleanup(func() { sc.Close(); cc.Close() })
	return l, cc, sc
}

// TestReviewBogusAnnouncementRemovesOtherServer: a dial record naming "svc.a" makes server
// "svc" open "svc.a.c2s", which is the accept ring of another live server named
// "svc.a.c2s". attach fails (no "svc.a.s2c"), and its deferred c.Close() removes the
// opened c2s segment unconditionally: the other server's name is unlinked while it lives.
func TestReviewBogusAnnouncementRemovesOtherServer(t *testing.T) {
	dir := reviewDir(t)
	opts := Options{Dir: dir}
	l, err := Listen("svc", opts)
	require.NoError(t, err)
	defer l.Close()
	other, err := Listen("svc.a.c2s", opts)
	require.NoError(t, err)
	defer other.Close()

	announce(t, "svc", "svc.a", opts)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = l.Accept(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, uint64(1), l.Skipped())

	assert.Contains(t, reviewNames(t, dir), "svc.a.c2s", "a bogus announcement to svc removed the live server svc.a.c2s's accept ring")
	// The other server never accepts: a dial to it waits (with context.Background() it
	// would wait forever), and must not find it gone.
	dctx, dcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer dcancel()
	_, err = Dial(dctx, "svc.a.c2s", opts)
	assert.NotErrorIs(t, err, ErrNoServer, "clients of the live server svc.a.c2s now get ErrNoServer")
}

// TestReviewDuplicateAnnouncementRemovesLiveConn: a second dial record for an accepted,
// live connection (a stale record of a dead process whose pid was reused, or any local
// writer) makes attach fail on the reader role (ErrBusy) and remove the live connection's
// ring names.
func TestReviewDuplicateAnnouncementRemovesLiveConn(t *testing.T) {
	dir := reviewDir(t)
	opts := Options{Dir: dir}
	l, cc, _ := reviewPair(t, opts)
	before := reviewNames(t, dir)
	require.Contains(t, before, cc.Name()+".c2s")

	announce(t, "svc", cc.Name(), opts)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := l.Accept(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, before, reviewNames(t, dir), "the live connection's rings were removed")
}

// TestReviewAnnouncementRemovesIdleSegment: a dial record naming a base whose .c2s does
// not exist makes the server remove any idle "svc.*.s2c" segment (removeIfAbandoned opens
// it by name, of any kind, and removes it when no live process has it open).
func TestReviewAnnouncementRemovesIdleSegment(t *testing.T) {
	dir := reviewDir(t)
	opts := Options{Dir: dir}
	l, err := Listen("svc", opts)
	require.NoError(t, err)
	defer l.Close()
	// Some other application's durable ring, nobody attached right now.
	seg, err := ring.Create("svc.data.s2c", ring.Spec{Kind: ring.SPSC, Size: 4096}, opts.shm())
	require.NoError(t, err)
	require.NoError(t, seg.Close())

	announce(t, "svc", "svc.data", opts)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = l.Accept(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, reviewNames(t, dir), "svc.data.s2c", "an idle segment named by a bogus announcement was removed")
}

// TestReviewRestartLosesConsumedDial: server 1 takes a dial record and releases it (Accept
// releases before attach) and "dies" before attaching (here: it stops and its role lock
// goes, as the kernel drops it at death). Server 2 takes the accept ring over. The dialling
// client sees a live server (RoleHeld) every 100 ms and waits, but nobody will ever attach:
// it waits until its deadline (forever with context.Background()), although the doc says a
// restarted server takes over pending dials.
func TestReviewRestartLosesConsumedDial(t *testing.T) {
	dir := reviewDir(t)
	opts := Options{Dir: dir}
	l1, err := Listen("svc", opts)
	require.NoError(t, err)

	dctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	dialed := make(chan error, 1)
	go func() {
		c, err := Dial(dctx, "svc", opts)
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	// Accept's first steps: take the record and release it.
	rec, err := l1.r.Next(dctx)
	require.NoError(t, err)
	base, ok := l1.announced(rec)
	require.True(t, ok)
	l1.r.Release()
	t.Logf("server 1 consumed %s and dies before attach", base)
	// "Death": the endpoints go away and the role lock is dropped, the name stays.
	l1.r.Close()
	l1.w.Close()
	l1.role.Release()
	defer l1.seg.Close()

	l2, err := Listen("svc", opts)
	require.NoError(t, err, "server 2 takes the name over")
	defer l2.Close()
	actx, acancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer acancel()
	go func() {
		if c, err := l2.Accept(actx); err == nil {
			c.Close()
		}
	}()
	start := time.Now()
	err = <-dialed
	t.Logf("Dial returned after %v: %v", time.Since(start), err)
	assert.NoError(t, err, "a pending dial should be served by the restarted server (or fail fast), not wait for its deadline")
}

// TestReviewListenCloseRace: B's Listen opens A's accept ring (Create: ErrExist), A's
// Close removes the name and releases the role, B acquires the role on the unlinked file
// and returns a Listener nobody can ever reach (Dial: ErrNoServer).
func TestReviewListenCloseRace(t *testing.T) {
	dir := reviewDir(t)
	opts := Options{Dir: dir}
	var orphans, ok, inUse int
	for i := 0; i < 3000 && orphans == 0; i++ {
		a, err := Listen("svc", opts)
		require.NoError(t, err)
		var wg sync.WaitGroup
		wg.Go(func() { a.Close() })
		b, err := Listen("svc", opts)
		wg.Wait()
		if err != nil {
			require.ErrorIs(t, err, ErrInUse)
			inUse++
			continue
		}
		ok++
		// b holds the role; is the name b's file?
		seg, oerr := shm.Open("svc", opts.shm())
		reachable := false
		if oerr == nil {
			held, _ := seg.RoleHeld(serverRole)
			reachable = held
			seg.Close()
		}
		if !reachable {
			orphans++
			_, derr := Dial(context.Background(), "svc", opts)
			t.Logf("iteration %d: Listen succeeded on an unlinked accept ring; Dial: %v", i, derr)
		}
		b.Close()
		for _, n := range reviewNames(t, dir) {
			shm.Remove(n, opts.shm())
		}
	}
	t.Logf("listen ok %d, in use %d, orphaned %d", ok, inUse, orphans)
	assert.Zero(t, orphans, "Listen returned a listener on an accept ring whose name was removed")
}

// TestReviewListenRemovesForeignSegment: a name held by another application's live SPSC
// ring (a writer attached) is "not an accept ring of ours, and no live server holds it":
// Listen removes it and creates its own, instead of failing.
func TestReviewListenRemovesForeignSegment(t *testing.T) {
	dir := reviewDir(t)
	opts := Options{Dir: dir}
	seg, err := ring.Create("svc", ring.Spec{Kind: ring.SPSC, Size: 4096}, opts.shm())
	require.NoError(t, err)
	defer seg.Close()
	w, err := ring.NewSPSCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()

	l, err := Listen("svc", opts)
	if err == nil {
		defer l.Close()
	}
	assert.Error(t, err, "Listen on a live foreign segment's name should fail")
	reopened, err := shm.Open("svc", opts.shm())
	require.NoError(t, err)
	defer reopened.Close()
	assert.Equal(t, ring.SPSC, reopened.Descriptor().Kind, "the live SPSC ring was removed and replaced by an accept ring")
}

// TestReviewOversizeReplyKillsConnection: one handler reply larger than the reply ring's
// MaxMessage (or a long error text) makes serveOne fail with ErrTooLarge, and Serve ends and
// closes the connection: every call in flight and every later call on it fails, instead of
// only the offending call getting a *RemoteError.
func TestReviewOversizeReplyKillsConnection(t *testing.T) {
	_, cc, sc := reviewPair(t, Options{Dir: reviewDir(t), RingSize: 4096})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, sc, func(req []byte) ([]byte, error) {
			if string(req) == "big" {
				return make([]byte, 8192), nil
			}
			return req, nil
		}, 2)
	}()
	cl := NewClient(cc)
	defer cl.Close()
	_, err := cl.Call(ctx, []byte("big"))
	t.Logf("oversize reply: %v", err)
	var re *RemoteError
	assert.ErrorAs(t, err, &re, "the offending call should get a RemoteError")
	reply, err := cl.Call(ctx, []byte("small"))
	assert.NoError(t, err, "the connection should survive one oversize reply")
	assert.Equal(t, "small", string(reply))
	select {
	case err := <-served:
		t.Logf("Serve returned: %v", err)
		assert.NotErrorIs(t, err, ring.ErrTooLarge)
	default:
	}
}

// TestReviewExpiredContextStillSends: a Call whose context has already ended should not
// send; send's select between the free sending turn and ctx.Done picks either, so about
// half the time the request goes out, the server runs it, and the reply is counted late.
func TestReviewExpiredContextStillSends(t *testing.T) {
	_, cc, sc := reviewPair(t, Options{Dir: reviewDir(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var handled atomic.Int64
	go Serve(ctx, sc, func(req []byte) ([]byte, error) { handled.Add(1); return req, nil }, 1)
	cl := NewClient(cc)
	defer cl.Close()
	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	for range 50 {
		_, err := cl.Call(done, []byte("x"))
		require.ErrorIs(t, err, context.Canceled)
	}
	_, err := cl.Call(ctx, []byte("sync"))
	require.NoError(t, err)
	t.Logf("requests handled for 50 calls with an ended context: %d, late %d", handled.Load()-1, cl.Late())
	assert.Zero(t, handled.Load()-1, "requests of calls whose context had ended were sent")
}

// TestReviewClientCloseServeHangs: Client.Close from another goroutine while many calls wait
// with context.Background() (in flight, in the handler, and queued for the sending turn
// on a full request ring): every call returns ErrClientClosed promptly; Serve returns; no
// goroutine is left behind; no names are left.
func TestReviewClientCloseServeHangs(t *testing.T) {
	for round := range 5 {
		dir := reviewDir(t)
		l, cc, sc := reviewPair(t, Options{Dir: dir, RingSize: 4096})
		ctx, cancel := context.WithCancel(context.Background())
		release := make(chan struct{})
		served := make(chan error, 1)
		go func() {
			served <- Serve(ctx, sc, func(req []byte) ([]byte, error) { <-release; return req, nil }, 2)
		}()
		cl := NewClient(cc)
		errs := make(chan error, 32)
		for range 32 {
			go func() {
				_, err := cl.Call(context.Background(), make([]byte, 500))
				errs <- err
			}()
		}
		time.Sleep(time.Duration(round*20) * time.Millisecond)
		require.NoError(t, cl.Close())
		timeout := time.After(5 * time.Second)
		for i := range 32 {
			select {
			case err := <-errs:
				assert.ErrorIs(t, err, ErrClientClosed, "call %d", i)
			case <-timeout:
				buf := make([]byte, 1<<20)
				t.Fatalf("round %d: %d calls still waiting 5 s after Close\n%s", round, 32-i, buf[:runtime.Stack(buf, true)])
			}
		}
		close(release)
		select {
		case err := <-served:
			assert.NoError(t, err)
		case <-time.After(5 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("round %d: Serve did not return after the client closed\n%s", round, filterStacks(buf[:runtime.Stack(buf, true)]))
		}
		cancel()
		sc.Close()
		l.Close()
		assert.Empty(t, reviewNames(t, dir))
	}
}

// TestReviewCloseDuringAcceptAndDial: Listener.Close from another goroutine while Accept
// waits and while a Dial waits for the hello: Accept returns ErrClosed, the Dial returns
// ErrNoServer within ~100 ms, and the dialler's rings are removed.
func TestReviewCloseDuringAcceptAndDial(t *testing.T) {
	dir := reviewDir(t)
	opts := Options{Dir: dir}
	l, err := Listen("svc", opts)
	require.NoError(t, err)
	acc := make(chan error, 1)
	go func() { _, err := l.Accept(context.Background()); acc <- err }()
	time.Sleep(20 * time.Millisecond)
	l.Close()
	select {
	case err := <-acc:
		assert.ErrorIs(t, err, ErrClosed)
	case <-time.After(3 * time.Second):
		t.Fatal("Accept did not return after Close")
	}

	l, err = Listen("svc", opts)
	require.NoError(t, err)
	dialed := make(chan error, 1)
	go func() {
		_, err := Dial(context.Background(), "svc", opts)
		dialed <- err
	}()
	require.Eventually(t, func() bool { return len(reviewNames(t, dir)) == 3 }, 3*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	l.Close()
	select {
	case err := <-dialed:
		assert.ErrorIs(t, err, ErrNoServer)
	case <-time.After(3 * time.Second):
		t.Fatal("Dial did not return after the server closed")
	}
	assert.Empty(t, reviewNames(t, dir))
}

// TestReviewManyCallersWithDeadlines: calls with short random deadlines mixed with calls
// that wait: no reply goes to the wrong caller, waiting callers all finish, and late + on
// time replies add up to the requests the server answered.
func TestReviewManyCallersWithDeadlines(t *testing.T) {
	_, cc, sc := reviewPair(t, Options{Dir: reviewDir(t), RingSize: 4096})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var answered atomic.Int64
	go Serve(ctx, sc, func(req []byte) ([]byte, error) {
		if strings.HasPrefix(string(req), "slow") {
			time.Sleep(time.Millisecond)
		}
		answered.Add(1)
		return req, nil
	}, 3)
	cl := NewClient(cc)
	defer cl.Close()
	var ok, timedOut atomic.Int64
	var wg sync.WaitGroup
	for g := range 12 {
		wg.Go(func() {
			for i := range 300 {
				req := fmt.Appendf(nil, "%sg%d-%d", map[bool]string{true: "slow", false: "fast"}[i%3 == 0], g, i)
				cctx, ccancel := ctx, context.CancelFunc(func() {})
				if g%2 == 0 {
					cctx, ccancel = context.WithTimeout(ctx, time.Duration(i%5)*200*time.Microsecond)
				}
				reply, err := cl.Call(cctx, req)
				ccancel()
				if err != nil {
					if !assert.ErrorIs(t, err, context.DeadlineExceeded) {
						return
					}
					timedOut.Add(1)
					continue
				}
				ok.Add(1)
				if string(reply) != string(req) {
					t.Errorf("reply %q to request %q", reply, req)
					return
				}
			}
		})
	}
	wg.Wait()
	// Flush: one more call after everything was answered reads the remaining late replies.
	time.Sleep(100 * time.Millisecond)
	_, err := cl.Call(ctx, []byte("flush"))
	require.NoError(t, err)
	t.Logf("ok %d, timed out %d, late %d, answered %d", ok.Load(), timedOut.Load(), cl.Late(), answered.Load())
	assert.Equal(t, answered.Load(), ok.Load()+1+int64(cl.Late()))
	assert.LessOrEqual(t, cl.Late(), uint64(timedOut.Load()))

}

// filterStacks keeps the goroutines that run broker code.
func filterStacks(b []byte) string {
	var out []string
	for _, g := range strings.Split(string(b), "\n\n") {
		if strings.Contains(g, "broker.ServeAppend") || strings.Contains(g, "broker.serveOne") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// Process-level: a server child stopped (SIGKILL) between two steps of Accept.

func init() {
	proctest.Register("review-server-steps", runReviewServerSteps)
}

// runReviewServerSteps listens on Args[1] in dir Args[0], takes one dial record and
// releases it (as Accept does before attach), reports "consumed"; with Args[2] == "half"
// it then opens the connection's rings and attaches both ends without writing the hello,
// and reports "half". The parent kills it at one of the points.
func runReviewServerSteps(c *proctest.Child) error {
	opts := Options{Dir: c.Args[0]}
	l, err := Listen(c.Args[1], opts)
	if err != nil {
		return err
	}
	c.Point("listening")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rec, err := l.r.Next(ctx)
	if err != nil {
		return err
	}
	base, ok := l.announced(rec)
	l.r.Release()
	if !ok {
		return fmt.Errorf("bad record")
	}
	c.Point("consumed")
	if c.Args[2] == "half" {
		rseg, err := shm.Open(base+".c2s", opts.shm())
		if err != nil {
			return err
		}
		wseg, err := shm.Open(base+".s2c", opts.shm())
		if err != nil {
			return err
		}
		if _, err := ring.NewSPSCReader(rseg, ring.Options{}); err != nil {
			return err
		}
		if _, err := ring.NewSPSCWriter(wseg, ring.Options{}); err != nil {
			return err
		}
		c.Point("half")
	}
	time.Sleep(time.Minute)
	return nil
}

// TestReviewProcRestartLosesConsumedDial: the server process is SIGKILLed after it took a
// dial record and before it attached; a new server takes the name over and accepts. The
// client's Dial (5 s deadline) never completes: every 100 ms it sees a live server holding
// the role and goes on waiting for a hello nobody will write. With context.Background()
// it would wait forever.
func TestReviewProcRestartLosesConsumedDial(t *testing.T) {
	dir := reviewDir(t)
	opts := Options{Dir: dir}
	srv := proctest.Start(t, "review-server-steps", proctest.Options{Args: []string{dir, "svc", "consume"}, KillAt: "consumed"})
	srv.WaitPoint("listening", 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dialed := make(chan error, 1)
	go func() {
		c, err := Dial(ctx, "svc", opts)
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	require.Error(t, srv.Wait(30*time.Second))
	l, err := Listen("svc", opts)
	require.NoError(t, err, "the restarted server takes the name over")
	defer l.Close()
	go func() {
		if c, err := l.Accept(ctx); err == nil {
			c.Close()
		}
	}()
	start := time.Now()
	err = <-dialed
	t.Logf("Dial returned %v after the restart: %v; names: %v", time.Since(start), err, reviewNames(t, dir))
	assert.NoError(t, err, "the pending dial should be accepted by the restarted server, or fail at once")
}

// TestReviewProcServerDiesMidHandshake: the server process attaches both ends of the
// connection and is SIGKILLed before the hello. Dial should fail with ErrNoServer (doc: "A
// server that dies before it accepted gives ErrNoServer too") and leave no rings behind.
func TestReviewProcServerDiesMidHandshake(t *testing.T) {
	dir := reviewDir(t)
	opts := Options{Dir: dir}
	srv := proctest.Start(t, "review-server-steps", proctest.Options{Args: []string{dir, "svc", "half"}, KillAt: "half"})
	srv.WaitPoint("listening", 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, "svc", opts)
	t.Logf("Dial returned after %v: %v", time.Since(start), err)
	assert.ErrorIs(t, err, ErrNoServer)
	assert.Less(t, time.Since(start), 2*time.Second)
	srv.Wait(30 * time.Second)
	assert.Equal(t, []string{"svc"}, reviewNames(t, dir), "the connection's rings are removed")
}

// TestReviewPrefilledReplyRingWedgesAccept: a client whose s2c ring is already full (it
// wrote into it itself before announcing) makes attach's hello Write wait for room that
// never comes: Accept (and, on a loop, the loop goroutine, with context.Background()) is
// stuck; a later honest client is never accepted.
func TestReviewPrefilledReplyRingWedgesAccept(t *testing.T) {
	dir := reviewDir(t)
	opts := Options{Dir: dir}
	l, err := Listen("svc", opts)
	require.NoError(t, err)
	defer l.Close()
	spec := ring.Spec{Kind: ring.SPSC, Size: 4096}
	base := "svc.evil.1"
	c2s, err := ring.Create(base+".c2s", spec, opts.shm())
	require.NoError(t, err)
	defer c2s.Close()
	s2c, err := ring.Create(base+".s2c", spec, opts.shm())
	require.NoError(t, err)
	defer s2c.Close()
	w, err := ring.NewSPSCWriter(s2c, ring.Options{})
	require.NoError(t, err)
	for w.TryWrite(1, make([]byte, 1000)) == nil {
	}
	w.Close()
	r, err := ring.NewSPSCReader(s2c, ring.Options{}) // attached, never reads
	require.NoError(t, err)
	defer r.Close()
	cw, err := ring.NewSPSCWriter(c2s, ring.Options{})
	require.NoError(t, err)
	defer cw.Close()
	announce(t, "svc", base, opts)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	honest := make(chan error, 1)
	go func() {
		c, err := Dial(ctx, "svc", opts)
		if err == nil {
			c.Close()
		}
		honest <- err
	}()
	actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer acancel()
	accepted := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept(actx)
			if err != nil {
				accepted <- err
				return
			}
			if c.Name() != base {
				c.Close()
				accepted <- nil
				return
			}
			c.Close()
		}
	}()
	err = <-accepted
	t.Logf("skipped %d", l.Skipped())
	assert.NoError(t, err, "the honest client behind a client with a full s2c ring is never accepted")
}
