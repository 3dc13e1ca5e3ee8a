package supervise

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReviewScaleNeverOverlapsAWorker: a worker started by Scale waits until the stopping
// process of the same index is reaped (slot.prev). Scaling down, up, down and up again
// before that process exits chained the newest slot to the intermediate one, which, stopped
// while it waited, ended at once without waiting: the new worker 1 started while the old one
// (which ignores SIGTERM) still ran. The scale calls are made under the lock, as four quick
// Scale calls can interleave, so that the intermediate slot is still retiring when the
// last one looks for its predecessor.
func TestReviewScaleNeverOverlapsAWorker(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, Grace: time.Hour}, func(i, n int) string {
		if i == 1 && n == 0 {
			return "stubborn"
		}
		return "serve"
	})
	h.waitReady(2)
	old := h.waitEvent("worker 1 start", isKind(Started, 1))

	s := h.sup
	s.mu.Lock()
	s.scaleLocked(1) // worker 1 gets SIGTERM, which it ignores: it runs for Grace
	s.scaleLocked(2) // a new slot 1 waits for it
	s.scaleLocked(1) // that slot is stopped while it waits
	s.scaleLocked(2) // and another new slot 1 waits for ... the stopped one
	s.mu.Unlock()

	time.Sleep(time.Second) // the old worker runs on; no new worker 1 may start meanwhile
	require.NoError(t, syscall.Kill(old.PID, syscall.SIGKILL))
	exit := h.waitEvent("old worker 1 exit", func(ev Event) bool { return ev.Kind == Exited && ev.PID == old.PID })
	next := h.waitEvent("new worker 1 start", func(ev Event) bool { return ev.Kind == Started && ev.Worker == 1 && ev.PID != old.PID })
	assert.False(t, next.Time.Before(exit.Time), "worker 1 started again (pid %d at %v) while the old one (pid %d) ran until %v",
		next.PID, next.Time, old.PID, exit.Time)
	assert.Equal(t, 2, h.count(isKind(Started, 1)), "one new worker 1")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, s.Stop(ctx), context.Canceled)
	assert.Equal(t, 0, s.Live())
}

// TestReviewSecondStopHonoursItsContext: Stop kills the workers at once when its ctx ends.
// A second Stop (a second Ctrl-C forcing the shutdown that a first one began gracefully)
// ignored its ctx and waited out the first one's Grace: an hour here.
func TestReviewSecondStopHonoursItsContext(t *testing.T) {
	h := newHarness(t, Options{Workers: 1, Grace: time.Hour}, always("stubborn"))
	h.waitReady(1)
	pid := h.sup.Workers()[0].PID
	first := make(chan error, 1)
	go func() { first <- h.sup.Stop(context.Background()) }()
	require.Eventually(t, func() bool { return h.sup.Scale(context.Background(), 1) == ErrStopped },
		30*time.Second, time.Millisecond, "the first Stop has begun")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	second := make(chan error, 1)
	go func() { second <- h.sup.Stop(ctx) }()
	select {
	case err := <-second:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(30 * time.Second):
		t.Errorf("the second Stop waited past its context (the worker ignores SIGTERM, Grace is an hour)")
		_ = syscall.Kill(pid, syscall.SIGKILL) // let both Stops end
		<-second
	}
	assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "killed and reaped before the second Stop returned")
	assert.NoError(t, <-first, "the first Stop's own ctx did not end")
	assert.Equal(t, syscall.SIGKILL, h.waitEvent("exit", isKind(Exited, 0)).Signal)
}
