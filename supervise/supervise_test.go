package supervise

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/backoff"
	"github.com/shmq/shmq/internal/proctest"
)

func TestMain(m *testing.M) {
	proctest.Register("worker", runWorker)
	proctest.Main(m)
}

// runWorker is a worker process. Args[0] is its mode:
//
//	serve        wait for SIGTERM, then exit 0
//	stubborn     ignore SIGTERM, wait to be killed
//	crash        exit 3 at once
//	done         exit 0 at once
//
// It reports "ready PID" on the pipe passed as file 0 once its signal handling is set up.
func runWorker(c *proctest.Child) error {
	mode := c.Args[0]
	term := make(chan os.Signal, 1)
	switch mode {
	case "serve":
		signal.Notify(term, syscall.SIGTERM)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
	}
	ready := c.File(0)
	fmt.Fprintf(ready, "ready %d\n", os.Getpid())
	switch mode {
	case "serve":
		<-term
		return nil
	case "stubborn":
		select {}
	case "crash":
		os.Exit(3)
	case "done":
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// harness runs a supervisor over worker processes of this test binary and records what
// happens.
type harness struct {
	t     *testing.T
	sup   *Supervisor
	ready chan int // pids that reported ready
	w     *os.File // write end of the ready pipe, passed to every worker

	mu     sync.Mutex
	events []Event
	change chan struct{} // closed and replaced on every event
	pids   map[int]bool  // every pid ever started
}

// newHarness starts a supervisor whose factory runs mode(i, n) for the n-th start
// (from 0) of worker i.
func newHarness(t *testing.T, opts Options, mode func(i, n int) string) *harness {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	h := &harness{t: t, ready: make(chan int, 100), w: w, change: make(chan struct{}), pids: map[int]bool{}}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				pid, _ := strconv.Atoi(p)
				h.ready <- pid
			}
		}
		r.Close()
	}()
	var mu sync.Mutex
	starts := map[int]int{}
	factory := func(i int) *exec.Cmd {
		mu.Lock()
		n := starts[i]
		starts[i]++
		mu.Unlock()
		cmd, err := proctest.Command("worker", mode(i, n))
		if err != nil {
			t.Errorf("command: %v", err)
			return nil
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, w)
		cmd.Stderr = os.Stderr
		return cmd
	}
	opts.OnEvent = h.record
	sup, err := New(factory, opts)
	require.NoError(t, err)
	h.sup = sup
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = sup.Stop(ctx)
		w.Close()
		h.assertAllReaped()
	})
	return h
}

func (h *harness) record(ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
	if ev.Kind == Started {
		h.pids[ev.PID] = true
	}
	close(h.change)
	h.change = make(chan struct{})
}

// waitEvent waits until an event matching match has been recorded and returns it.
func (h *harness) waitEvent(what string, match func(Event) bool) Event {
	h.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		h.mu.Lock()
		for _, ev := range h.events {
			if match(ev) {
				h.mu.Unlock()
				return ev
			}
		}
		ch := h.change
		h.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			h.t.Fatalf("no event %s within 30s; events: %v", what, h.snapshot())
		}
	}
}

// waitCount waits until n events match.
func (h *harness) waitCount(what string, n int, match func(Event) bool) {
	h.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		h.mu.Lock()
		got, ch := 0, h.change
		for _, ev := range h.events {
			if match(ev) {
				got++
			}
		}
		h.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			h.t.Fatalf("%s: %d of %d events within 30s; events: %v", what, got, n, h.snapshot())
		}
	}
}

func (h *harness) snapshot() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.events...)
}

func (h *harness) count(match func(Event) bool) int {
	n := 0
	for _, ev := range h.snapshot() {
		if match(ev) {
			n++
		}
	}
	return n
}

// waitReady waits until n workers have reported ready.
func (h *harness) waitReady(n int) {
	h.t.Helper()
	for range n {
		select {
		case <-h.ready:
		case <-time.After(30 * time.Second):
			h.t.Fatalf("worker not ready within 30s; events %v", h.snapshot())
		}
	}
}

// assertAllReaped checks that no process the supervisor started exists any more, not even
// as a zombie.
func (h *harness) assertAllReaped() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for pid := range h.pids {
		err := syscall.Kill(pid, 0)
		assert.ErrorIs(h.t, err, syscall.ESRCH, "worker pid %d still exists after Stop", pid)
	}
}

func isKind(k EventKind, worker int) func(Event) bool {
	return func(ev Event) bool { return ev.Kind == k && ev.Worker == worker }
}

func always(mode string) func(i, n int) string { return func(int, int) string { return mode } }

func TestCrashRestartedAfterDelay(t *testing.T) {
	const delay = 300 * time.Millisecond
	h := newHarness(t, Options{Workers: 1, Restart: backoff.Policy{Base: delay, Factor: 1}},
		func(i, n int) string {
			if n == 0 {
				return "crash"
			}
			return "serve"
		})
	first := h.waitEvent("first start", isKind(Started, 0))
	exit := h.waitEvent("crash", isKind(Exited, 0))
	assert.Equal(t, first.PID, exit.PID)
	assert.Equal(t, 3, exit.ExitCode)
	assert.False(t, exit.Stopped)
	assert.Equal(t, 1, exit.Failures)
	sched := h.waitEvent("restart scheduled", isKind(Restarting, 0))
	assert.Equal(t, delay, sched.Delay)
	second := h.waitEvent("second start", func(ev Event) bool { return ev.Kind == Started && ev.PID != first.PID })
	assert.GreaterOrEqual(t, second.Time.Sub(exit.Time), delay, "restarted only after the delay")
	h.waitReady(2)
	assert.Equal(t, 1, h.sup.Live())
	st := h.sup.Stats()
	assert.Equal(t, Stats{Desired: 1, Live: 1, Starts: 2, Restarts: 1, Exits: 1, Failures: 1}, st)
	require.NoError(t, h.sup.Stop(context.Background()))
	assert.Equal(t, 0, h.sup.Live())
}

func TestKilledWorkerRestarted(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, Restart: backoff.Policy{Base: 50 * time.Millisecond}}, always("serve"))
	h.waitReady(2)
	victim := h.waitEvent("worker 1 start", isKind(Started, 1))
	require.NoError(t, syscall.Kill(victim.PID, syscall.SIGKILL))
	exit := h.waitEvent("worker 1 killed", isKind(Exited, 1))
	assert.Equal(t, victim.PID, exit.PID)
	assert.Equal(t, syscall.SIGKILL, exit.Signal)
	assert.Equal(t, -1, exit.ExitCode)
	assert.False(t, exit.Stopped)
	again := h.waitEvent("worker 1 restart", func(ev Event) bool { return ev.Kind == Started && ev.Worker == 1 && ev.PID != victim.PID })
	h.waitReady(1)
	assert.Equal(t, 2, h.sup.Live())
	pids := map[int]int{}
	for _, w := range h.sup.Workers() {
		pids[w.Index] = w.PID
	}
	assert.Equal(t, again.PID, pids[1])
	assert.Equal(t, 0, h.count(isKind(Exited, 0)), "worker 0 untouched")
}

func TestScale(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, Grace: 20 * time.Second}, always("serve"))
	h.waitReady(2)
	ctx := context.Background()
	require.NoError(t, h.sup.Scale(ctx, 4))
	h.waitReady(2)
	assert.Equal(t, 4, h.sup.Live())
	before := map[int]int{}
	for _, w := range h.sup.Workers() {
		before[w.Index] = w.PID
	}
	assert.Len(t, before, 4)

	require.NoError(t, h.sup.Scale(ctx, 1))
	assert.Equal(t, 1, h.sup.Live(), "Scale returns once the removed workers are reaped")
	ws := h.sup.Workers()
	require.Len(t, ws, 1)
	assert.Equal(t, WorkerInfo{Index: 0, PID: before[0], Since: ws[0].Since}, ws[0], "the lowest-numbered worker stays")
	for i := 1; i < 4; i++ {
		ev := h.waitEvent(fmt.Sprint("worker ", i, " stopped"), isKind(Exited, i))
		assert.True(t, ev.Stopped)
		assert.Equal(t, 0, ev.ExitCode, "stopped gracefully by SIGTERM (it exits 0 on SIGTERM)")
		assert.NoError(t, ev.Err)
		assert.ErrorIs(t, syscall.Kill(before[i], 0), syscall.ESRCH, "worker %d reaped", i)
	}
	st := h.sup.Stats()
	assert.Equal(t, Stats{Desired: 1, Live: 1, Starts: 4, Exits: 3}, st)
	assert.Equal(t, 0, h.count(func(ev Event) bool { return ev.Kind == Restarting }), "a stopped worker is not restarted")

	// Up again: worker 1 is a new process.
	require.NoError(t, h.sup.Scale(ctx, 2))
	h.waitReady(1)
	assert.Equal(t, 2, h.sup.Live())
	assert.ErrorIs(t, h.sup.Scale(ctx, -1), ErrInvalid)
}

func TestStopReapsAll(t *testing.T) {
	h := newHarness(t, Options{Workers: 3, Grace: 200 * time.Millisecond},
		func(i, n int) string {
			if i == 2 {
				return "stubborn"
			}
			return "serve"
		})
	h.waitReady(3)
	pids := h.sup.Workers()
	require.Len(t, pids, 3)
	require.NoError(t, h.sup.Stop(context.Background()))
	assert.Equal(t, 0, h.sup.Live())
	for _, w := range pids {
		assert.ErrorIs(t, syscall.Kill(w.PID, 0), syscall.ESRCH, "worker %d reaped", w.Index)
	}
	stubborn := h.waitEvent("stubborn exit", isKind(Exited, 2))
	assert.Equal(t, syscall.SIGKILL, stubborn.Signal, "SIGTERM ignored: killed after the grace period")
	assert.True(t, stubborn.Stopped)
	n := len(h.snapshot())
	assert.Equal(t, 3, h.count(func(ev Event) bool { return ev.Kind == Exited && ev.Stopped }))
	assert.ErrorIs(t, h.sup.Scale(context.Background(), 3), ErrStopped)
	require.NoError(t, h.sup.Stop(context.Background()), "second Stop")
	time.Sleep(100 * time.Millisecond)
	assert.Len(t, h.snapshot(), n, "no event after Stop returned")
	assert.Equal(t, uint64(0), h.sup.Stats().Failures)
}

func TestStopContextKills(t *testing.T) {
	h := newHarness(t, Options{Workers: 1, Grace: time.Hour}, always("stubborn"))
	h.waitReady(1)
	pid := h.sup.Workers()[0].PID
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := h.sup.Stop(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 30*time.Minute, "did not wait for the grace period")
	assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "killed and reaped before Stop returned")
	assert.Equal(t, syscall.SIGKILL, h.waitEvent("exit", isKind(Exited, 0)).Signal)
}

func TestGiveUpAfterMaxAttempts(t *testing.T) {
	h := newHarness(t, Options{Workers: 1, Restart: backoff.Policy{Base: 10 * time.Millisecond, MaxAttempts: 3}}, always("crash"))
	gave := h.waitEvent("gave up", isKind(GaveUp, 0))
	assert.Equal(t, 3, gave.Failures)
	assert.Equal(t, 3, h.count(isKind(Started, 0)))
	assert.Equal(t, 3, h.count(isKind(Exited, 0)))
	assert.Equal(t, 2, h.count(isKind(Restarting, 0)))
	st := h.sup.Stats()
	assert.Equal(t, Stats{Desired: 1, Starts: 3, Restarts: 2, Exits: 3, Failures: 3, GaveUp: 1}, st)

	// Scale to the same count starts the given-up worker again.
	require.NoError(t, h.sup.Scale(context.Background(), 1))
	h.waitCount("started again", 4, isKind(Started, 0))
}

func TestCleanExitNotRestarted(t *testing.T) {
	h := newHarness(t, Options{Workers: 1, Restart: backoff.Policy{Base: 10 * time.Millisecond}}, always("done"))
	exit := h.waitEvent("exit", isKind(Exited, 0))
	assert.Equal(t, 0, exit.ExitCode)
	assert.NoError(t, exit.Err)
	time.Sleep(200 * time.Millisecond)
	assert.Equal(t, 1, h.count(isKind(Started, 0)), "status 0: done, not restarted")
	assert.Equal(t, 0, h.sup.Live())
}

func TestAlwaysRestartsCleanExit(t *testing.T) {
	h := newHarness(t, Options{Workers: 1, Always: true, Restart: backoff.Policy{Base: 10 * time.Millisecond}},
		func(i, n int) string {
			if n == 0 {
				return "done"
			}
			return "serve"
		})
	h.waitCount("second start", 2, isKind(Started, 0))
	assert.Equal(t, uint64(0), h.sup.Stats().Failures)
}

func TestStartFailure(t *testing.T) {
	var calls atomic.Int32
	var mu sync.Mutex
	var events []Event
	sup, err := New(func(i int) *exec.Cmd {
		if calls.Add(1) == 1 {
			return exec.Command("/nonexistent/shmq-worker")
		}
		return nil
	}, Options{Workers: 1, Restart: backoff.Policy{Base: 10 * time.Millisecond, MaxAttempts: 2},
		OnEvent: func(ev Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return sup.Stats().GaveUp == 1 }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, sup.Stop(context.Background()))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, events, 4)
	assert.Equal(t, StartFailed, events[0].Kind)
	assert.ErrorIs(t, events[0].Err, os.ErrNotExist)
	assert.Equal(t, Restarting, events[1].Kind)
	assert.Equal(t, StartFailed, events[2].Kind)
	assert.ErrorIs(t, events[2].Err, ErrNilCommand)
	assert.Equal(t, GaveUp, events[3].Kind)
}

func TestNewInvalid(t *testing.T) {
	f := func(int) *exec.Cmd { return nil }
	for _, tt := range []struct {
		name    string
		factory func(int) *exec.Cmd
		opts    Options
	}{
		{"nil factory", nil, Options{}},
		{"negative workers", f, Options{Workers: -1}},
		{"negative grace", f, Options{Grace: -1}},
		{"negative stable", f, Options{StableAfter: -1}},
		{"bad restart", f, Options{Restart: backoff.Policy{Factor: 0.5}}},
	} {
		_, err := New(tt.factory, tt.opts)
		assert.True(t, errors.Is(err, ErrInvalid), "%s: %v", tt.name, err)
	}
}
