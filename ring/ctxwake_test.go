package ring_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
)

// TestWaitWithLongLivedContextAllocatesNothing: a reader that sleeps in the kernel on every
// Next, always with the same cancellable context, allocates nothing per wait (its context
// wake-up stays registered from one wait to the next); before, each sleep cost three
// allocations (context.AfterFunc and its closure).
func TestWaitWithLongLivedContextAllocatesNothing(t *testing.T) {
	seg, w, r := newSPSC(t, 4096, ring.Options{Wait: ring.Futex()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kick := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	msg := make([]byte, 64)
	go func() { // writes one record a little after each kick, so that Next sleeps first
		for {
			select {
			case <-kick:
			case <-stop:
				return
			}
			time.Sleep(200 * time.Microsecond)
			if err := w.Write(context.Background(), 1, msg); err != nil {
				return
			}
		}
	}()
	read := func() {
		kick <- struct{}{}
		if _, err := r.Next(ctx); err != nil {
			t.Fatal(err)
		}
		r.Release()
	}
	for range 20 {
		read()
	}
	before, err := ring.ReadStats(seg)
	require.NoError(t, err)
	const runs = 300
	allocs := testing.AllocsPerRun(runs, read)
	after, err := ring.ReadStats(seg)
	require.NoError(t, err)
	slept := after.Readers.FutexWaits - before.Readers.FutexWaits
	t.Logf("%.2f allocations per wait, %d of %d reads slept in the kernel", allocs, slept, runs+1)
	require.Greater(t, slept, uint64(runs/2), "the reads must sleep in the kernel for this test to mean anything")
	assert.Zero(t, allocs)
}

// TestContextWakeReused: the context wake-up kept from earlier waits still ends a later
// one at once: a reader asleep (long: idle, its writer's death watched) with a context it
// used before returns context.Canceled as soon as the context is cancelled, not at the end
// of its sleep; and another context still works after it.
func TestContextWakeReused(t *testing.T) {
	_, w, r := newSPSC(t, 4096, ring.Options{Wait: ring.Futex()})
	write := make(chan string)
	wrote := make(chan struct{})
	go func() { // one writer goroutine: it writes each string a little after it gets it
		for s := range write {
			time.Sleep(5 * time.Millisecond)
			_ = w.Write(context.Background(), 1, []byte(s))
			wrote <- struct{}{}
		}
	}()
	defer close(write)
	ctx, cancel := context.WithCancel(context.Background())
	for range 3 {
		write <- "x"
		_, err := r.Next(ctx)
		require.NoError(t, err)
		r.Release()
		<-wrote
	}
	done := make(chan error, 1)
	go func() { _, err := r.Next(ctx); done <- err }()
	time.Sleep(time.Second) // idle long enough for a long sleep
	cancelled := time.Now()
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
		t.Logf("returned %v after the cancel", time.Since(cancelled))
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled context did not wake the reader")
	}

	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	write <- "y"
	rec, err := r.Next(ctx2)
	require.NoError(t, err)
	assert.Equal(t, "y", string(rec.Data))
	r.Release()
	<-wrote
}
