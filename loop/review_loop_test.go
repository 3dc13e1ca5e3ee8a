//go:build linux

package loop_test

// Review tests for loop.go. Each names the finding it demonstrates; see the review report.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// ---------------------------------------------------------------------------------------
// A periodic timer whose fn takes longer than its period starves the loop forever:
// runTimers takes a fresh time.Now() on every iteration, so the timer it just rescheduled
// (to now+every, or when+every) is always due again when fn returns. Posted tasks, readers,
// Stop and ctx never get a turn.

func TestReviewPeriodicTimerLivelock(t *testing.T) {
	l := loop.New(loop.Options{Wait: ring.Futex()})
	done := make(chan error, 1)
	go func() { done <- l.Run(context.Background()) }()
	var ticks atomic.Int64
	var fast atomic.Bool
	defer fast.Store(true) // let the loop recover once the test has failed
	_, err := l.Every(time.Millisecond, func() {
		ticks.Add(1)
		if !fast.Load() {
			time.Sleep(2 * time.Millisecond) // slower than the period
		}
	})
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	ran := make(chan struct{})
	require.NoError(t, l.Post(func() { close(ran) }))
	select {
	case <-ran:
	case <-time.After(2 * time.Second):
		t.Errorf("a posted task did not run in 2s while a slow periodic timer runs (ticks=%d)", ticks.Load())
	}
	l.Stop()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		// Unblock the test process: nothing else can make Run return, so leave it spinning.
		t.Fatalf("Run did not return 2s after Stop (ticks=%d): the timer loop never yields", ticks.Load())
	}
}

// ---------------------------------------------------------------------------------------
// A timer added from another goroutine while the loop is between idle's read of the heap
// and sleep's load of the doorbell is slept through: sleep's "pending" check looks at posted,
// changed and stopped, not at the timers, and the bell value it waits on already includes
// the ring() of the new timer. The timer fires up to maxSleep (100 ms) late.

func TestReviewTimerAddedWhileFallingAsleep(t *testing.T) {
	for _, w := range []ring.Wait{ring.Futex(), ring.Adaptive(20 * time.Microsecond)} {
		t.Run(w.Name(), func(t *testing.T) { testTimerAddedWhileFallingAsleep(t, w) })
	}
}

func testTimerAddedWhileFallingAsleep(t *testing.T, w ring.Wait) {
	// A lost wake-up would cost the whole Check interval (10 s); scheduling noise on a busy
	// machine stays far below the 2 s that counts as late.
	l := loop.New(loop.Options{Wait: w, Check: 10 * time.Second})
	stop := run(t, l)
	defer stop()
	const trials = 30000
	base := time.Duration(0)
	if w.Name() == "adaptive" {
		base = w.Duration() - 2*time.Microsecond
	}
	late := 0
	var worst time.Duration
	for i := range trials {
		fired := make(chan time.Time, 1)
		// Wake the loop so that it falls asleep again right now, and add a timer meanwhile.
		require.NoError(t, l.Post(func() {}))
		spin := base + time.Duration(i%80)*100*time.Nanosecond
		for s := time.Now(); time.Since(s) < spin; {
		}
		start := time.Now()
		_, err := l.AfterFunc(0, func() { fired <- time.Now() })
		require.NoError(t, err)
		at := <-fired
		if d := at.Sub(start); d > 2*time.Second {
			late++
			worst = max(worst, d)
			if late >= 3 {
				break
			}
		}
	}
	if late > 0 {
		t.Errorf("%d AfterFunc(0) timers fired late, worst after %v (lost wake-up)", late, worst)
	}
}

// ---------------------------------------------------------------------------------------
// Same window for ctx: the context.AfterFunc ring() lands after Run's ctx.Err() check and
// before sleep's load of the bell, and sleep's pending check does not look at ctx.

func TestReviewCtxCancelWhileFallingAsleep(t *testing.T) {
	const trials = 20000
	late := 0
	var worst time.Duration
	for i := range trials {
		l := loop.New(loop.Options{Wait: ring.Adaptive(20 * time.Microsecond), Check: 10 * time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan time.Time, 1)
		started := make(chan struct{})
		go func() { _ = l.Run(ctx); done <- time.Now() }()
		require.NoError(t, l.Post(func() { close(started) }))
		<-started
		spin := 18*time.Microsecond + time.Duration(i%80)*100*time.Nanosecond
		for s := time.Now(); time.Since(s) < spin; {
		}
		start := time.Now()
		cancel()
		if d := (<-done).Sub(start); d > 2*time.Second {
			late++
			worst = max(worst, d)
			if late >= 3 {
				break
			}
		}
	}
	if late > 0 {
		t.Errorf("%d Runs returned late after cancel, worst after %v (lost wake-up)", late, worst)
	}
}

// ---------------------------------------------------------------------------------------
// The loop never learns that a writer died: Drain gets an already cancelled context, so the
// reader's awaitData returns at its first ctx check, before the expensive check (liveness,
// MPMC repair) that is the only place ErrPeerDead is produced. Ready stays false, so onEnd
// (documented to receive ring.ErrPeerDead) is never called. A plain Next gets ErrPeerDead.

const envReviewChild = "SHMQ_LOOP_REVIEW_CHILD"

type reviewChildCfg struct {
	Dir, Name string
	Kind      string // "spsc-write-exit": write one record and exit without Close; "mpmc-reserve-die": reserve and SIGKILL self
}

// TestReviewChild is the child process of the cross-process review tests (it does nothing
// unless started by one).
func TestReviewChild(t *testing.T) {
	raw, ok := os.LookupEnv(envReviewChild)
	if !ok {
		t.Skip("child only")
	}
	var cfg reviewChildCfg
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		panic(err)
	}
	seg, err := shm.Open(cfg.Name, shm.Options{Dir: cfg.Dir})
	if err != nil {
		panic(err)
	}
	switch cfg.Kind {
	case "spsc-write-exit":
		w, err := ring.NewSPSCWriter(seg, ring.Options{})
		if err != nil {
			panic(err)
		}
		if err := w.Write(context.Background(), 0, []byte("x")); err != nil {
			panic(err)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case "mpmc-reserve-die":
		w, err := ring.NewMPMCWriter(seg, ring.Options{})
		if err != nil {
			panic(err)
		}
		if _, err := w.Reserve(context.Background(), 0, 8); err != nil {
			panic(err)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	select {}
}

func runReviewChild(t *testing.T, cfg reviewChildCfg) {
	t.Helper()
	b, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^TestReviewChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envReviewChild+"="+string(b))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, _ := cmd.CombinedOutput() // it SIGKILLs itself
	if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !st.Signaled() {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", cmd.ProcessState, out)
	}
}

func TestReviewPeerDeadNeverReachesOnEnd(t *testing.T) {
	opts := testOpts(t)
	seg := create(t, opts, "dead", ring.Spec{Kind: ring.SPSC, Size: 4096})
	runReviewChild(t, reviewChildCfg{Dir: opts.Dir, Name: "dead", Kind: "spsc-write-exit"})

	// Control: a plain reader gets the record, then ErrPeerDead.
	{
		seg2 := create(t, opts, "dead2", ring.Spec{Kind: ring.SPSC, Size: 4096})
		runReviewChild(t, reviewChildCfg{Dir: opts.Dir, Name: "dead2", Kind: "spsc-write-exit"})
		r, err := ring.NewSPSCReader(seg2, ring.Options{Wait: ring.Futex()})
		require.NoError(t, err)
		defer r.Close()
		_, err = r.Next(context.Background())
		require.NoError(t, err)
		r.Release()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = r.Next(ctx)
		require.ErrorIs(t, err, ring.ErrPeerDead, "control: a blocking reader notices the dead writer")
	}

	r, err := ring.NewSPSCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	l := loop.New(loop.Options{Wait: ring.Futex()})
	got := make(chan struct{}, 1)
	ended := make(chan error, 1)
	_, err = l.Add(r, func(ring.Record) error { got <- struct{}{}; return nil }, func(err error) { ended <- err })
	require.NoError(t, err)
	stop := run(t, l)
	defer stop()
	<-got
	select {
	case err := <-ended:
		require.ErrorIs(t, err, ring.ErrPeerDead)
	case <-time.After(3 * time.Second):
		t.Error("onEnd not called 3s after the writer process died (a blocking Next reports ErrPeerDead within ~200ms)")
	}
}

// MPMC: a writer process that dies between Reserve and Commit leaves a claimed slot at the
// read position. Only the reader's repair (in awaitData's expensive check) turns it into a
// skip; the loop never runs it, so every record published after it is never delivered.
func TestReviewMPMCDeadWriterSlotWedgesLoop(t *testing.T) {
	opts := testOpts(t)
	seg := create(t, opts, "m", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64})
	runReviewChild(t, reviewChildCfg{Dir: opts.Dir, Name: "m", Kind: "mpmc-reserve-die"})
	w, err := ring.NewMPMCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	for i := range 3 {
		require.NoError(t, w.Write(context.Background(), uint32(i), []byte("after")))
	}
	r, err := ring.NewMPMCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	l := loop.New(loop.Options{Wait: ring.Futex()})
	var n atomic.Int64
	_, err = l.Add(r, func(ring.Record) error { n.Add(1); return nil }, nil)
	require.NoError(t, err)
	stop := run(t, l)
	deadline := time.Now().Add(3 * time.Second)
	for n.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, stop())
	if n.Load() < 3 {
		// Control: the same reader, blocking, repairs the slot and gets them.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		got := 0
		for got < 3 {
			if _, err := r.Next(ctx); err != nil {
				break
			}
			got++
		}
		r.Release()
		t.Errorf("loop delivered %d of 3 records behind a dead writer's slot in 3s; a blocking Next then got %d", n.Load(), got)
	}
}

// ---------------------------------------------------------------------------------------
// Allocation on the hot path: idle calls l.opts.Wait.Name(), which builds the strategy's
// String() ("adaptive:" + d.String()), on every call; with the default Adaptive wait idle
// runs on every spin round, so an idle-spinning loop allocates continuously, and a loop
// that goes idle after each message allocates per message.

func TestReviewAdaptiveIdleAllocates(t *testing.T) {
	for _, w := range []ring.Wait{ring.Futex(), ring.Adaptive(0), ring.Sleep(50 * time.Microsecond)} {
		t.Run(w.Name(), func(t *testing.T) {
			opts := testOpts(t)
			seg := create(t, opts, "a", ring.Spec{Kind: ring.SPSC, Size: 1 << 16})
			r, err := ring.NewSPSCReader(seg, ring.Options{})
			require.NoError(t, err)
			defer r.Close()
			wr, err := ring.NewSPSCWriter(seg, ring.Options{})
			require.NoError(t, err)
			defer wr.Close()
			l := loop.New(loop.Options{Wait: w})
			var handled atomic.Int64
			_, err = l.Add(r, func(ring.Record) error { handled.Add(1); return nil }, nil)
			require.NoError(t, err)
			stop := run(t, l)
			defer stop()
			msg := make([]byte, 8)
			const N = 500
			// Warm up.
			for range 50 {
				require.NoError(t, wr.TryWrite(0, msg))
				time.Sleep(200 * time.Microsecond)
			}
			for handled.Load() < 50 {
				time.Sleep(time.Millisecond)
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range N {
				require.NoError(t, wr.TryWrite(0, msg))
				time.Sleep(200 * time.Microsecond) // the loop goes idle between messages
			}
			for handled.Load() < 50+N {
				time.Sleep(time.Millisecond)
			}
			runtime.ReadMemStats(&after)
			per := float64(after.Mallocs-before.Mallocs) / N
			t.Logf("%s: %.1f allocations per message (whole process)", w, per)
			if per > 2 {
				t.Errorf("%s: %.1f allocations per message", w, per)
			}
		})
	}
}

// ---------------------------------------------------------------------------------------
// Remove does not keep onEnd from being called: a handler removes source B and closes B's
// reader (a natural "drop this connection"); later in the same turn serve finds B Ready
// (closed), Drain returns ErrClosed, and end() calls B's onEnd although B was removed.

func TestReviewOnEndAfterRemove(t *testing.T) {
	opts := testOpts(t)
	segA := create(t, opts, "a", ring.Spec{Kind: ring.SPSC, Size: 4096})
	segB := create(t, opts, "b", ring.Spec{Kind: ring.SPSC, Size: 4096})
	ra, err := ring.NewSPSCReader(segA, ring.Options{})
	require.NoError(t, err)
	defer ra.Close()
	rb, err := ring.NewSPSCReader(segB, ring.Options{})
	require.NoError(t, err)
	defer rb.Close()
	l := loop.New(loop.Options{Wait: ring.Futex()})
	var srcB *loop.Source
	var once sync.Once
	_, err = l.Add(ra, func(ring.Record) error {
		once.Do(func() { srcB.Remove(); _ = srcB.Reader().Close() })
		return nil
	}, nil)
	require.NoError(t, err)
	endedB := make(chan error, 1)
	srcB, err = l.Add(rb, func(ring.Record) error { return nil }, func(err error) { endedB <- err })
	require.NoError(t, err)
	for _, seg := range []*shm.Segment{segA, segB} {
		w, err := ring.NewSPSCWriter(seg, ring.Options{})
		require.NoError(t, err)
		defer w.Close()
		require.NoError(t, w.TryWrite(0, []byte("x")))
	}
	stop := run(t, l)
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, stop())
	select {
	case err := <-endedB:
		t.Errorf("onEnd of a removed source was called (with %v)", err)
	default:
	}
}

// ---------------------------------------------------------------------------------------
// Remove returns before the loop has stopped using the reader: the loop may still be in
// Drain (or Ready/Arm/Disarm) on it, so the caller cannot safely use the reader, which is
// for one goroutine at a time, after Remove. Run with -race.

func TestReviewRemoveNotSynchronous(t *testing.T) {
	opts := testOpts(t)
	seg := create(t, opts, "r", ring.Spec{Kind: ring.SPSC, Size: 1 << 16})
	r, err := ring.NewSPSCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	w, err := ring.NewSPSCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	l := loop.New(loop.Options{Wait: ring.Spin()})
	var inHandler atomic.Bool
	var afterRemove atomic.Int64
	var removed atomic.Bool
	src, err := l.Add(r, func(ring.Record) error {
		if removed.Load() {
			afterRemove.Add(1)
		}
		inHandler.Store(true)
		time.Sleep(50 * time.Microsecond)
		inHandler.Store(false)
		return nil
	}, nil)
	require.NoError(t, err)
	stop := run(t, l)
	defer stop()
	for range 200 {
		_ = w.TryWrite(0, []byte("x"))
	}
	for !inHandler.Load() {
		runtime.Gosched()
	}
	<-src.Remove()
	removed.Store(true)
	time.Sleep(20 * time.Millisecond)
	if n := afterRemove.Load(); n > 0 {
		t.Errorf("the handler ran %d times after Remove's channel closed", n)
	}
}

// After Remove the caller reads from the reader itself (it is no longer the loop's). Under
// -race this reports a data race on the reader's fields with the loop's Drain still running.
func TestReviewRemoveThenUseReaderRace(t *testing.T) {
	opts := testOpts(t)
	seg := create(t, opts, "r", ring.Spec{Kind: ring.SPSC, Size: 1 << 16})
	r, err := ring.NewSPSCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	w, err := ring.NewSPSCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	l := loop.New(loop.Options{Wait: ring.Spin()})
	var inHandler atomic.Bool
	src, err := l.Add(r, func(ring.Record) error {
		inHandler.Store(true)
		time.Sleep(20 * time.Microsecond)
		return nil
	}, nil)
	require.NoError(t, err)
	stop := run(t, l)
	defer stop()
	for range 500 {
		_ = w.TryWrite(0, []byte("x"))
	}
	for !inHandler.Load() {
		runtime.Gosched()
	}
	<-src.Remove()
	for range 100 { // the reader is ours now
		if _, err := r.TryNext(); err == nil {
			r.Release()
		}
	}
}

// ---------------------------------------------------------------------------------------
// serve counts progress by the records Drain accepted (n), not by those it consumed: a turn
// whose records the handler all rejected (error or panic) is "no progress", so the loop
// idles (Sleep: d; Futex: arms every reader) between batches it is still busy with.
func TestReviewRejectedBatchesCountAsIdle(t *testing.T) {
	measure := func(reject bool) time.Duration {
		opts := testOpts(t)
		seg := create(t, opts, "r", ring.Spec{Kind: ring.SPSC, Size: 1 << 16})
		r, err := ring.NewSPSCReader(seg, ring.Options{})
		require.NoError(t, err)
		defer r.Close()
		w, err := ring.NewSPSCWriter(seg, ring.Options{})
		require.NoError(t, err)
		defer w.Close()
		const N = 640 // 10 batches of 64
		for range N {
			require.NoError(t, w.TryWrite(0, []byte("x")))
		}
		l := loop.New(loop.Options{Wait: ring.Sleep(time.Hour), OnError: func(*loop.Source, error) {}})
		var seen atomic.Int64
		_, err = l.Add(r, func(ring.Record) error {
			seen.Add(1)
			if reject {
				return errors.New("no")
			}
			return nil
		}, nil)
		require.NoError(t, err)
		stop := run(t, l)
		defer stop()
		// With an hour's sleep between idle turns, the records are all handled only if no
		// batch in between counts as idle.
		require.Eventually(t, func() bool { return seen.Load() == N }, 20*time.Second, time.Millisecond,
			"reject=%v: %d of %d handled: a batch counted as an idle turn", reject, seen.Load(), N)
		return 0
	}
	measure(false)
	measure(true)
}
