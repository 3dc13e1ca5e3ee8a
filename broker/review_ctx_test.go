//go:build linux

package broker

// TestReviewServeCtxCancelNoLeak (review finding 2, fixed in rpc.go). It also caught a ring
// bug: SPSC and MPMC readers slept on "a record is available" rather than "a record is
// available or the stream ended", so an end of stream between a reader's last check and its
// sleep went unseen until the sleep's timeout (100 ms before idle waiters slept 10 s).

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestReviewServeCtxCancelNoLeak: Serve's ctx ends while handlers run and requests are
// queued; Serve returns ctx's error, the client's calls end (io.EOF), and once the handlers
// return no worker goroutine remains.
func TestReviewServeCtxCancelNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := reviewDir(t)
	l, cc, sc := reviewPair(t, Options{Dir: dir})
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, sc, func(req []byte) ([]byte, error) { <-release; return req, nil }, 4)
	}()
	cl := NewClient(cc)
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			_, err := cl.Call(context.Background(), []byte("x"))
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-served:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("Serve did not return after ctx ended\n%s", filterStacks(buf[:runtime.Stack(buf, true)]))
	}
	for range 16 {
		select {
		case err := <-errs:
			assert.Error(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("a call still waits after the server's Serve ended and closed the connection")
		}
	}
	releaseOnce.Do(func() { close(release) })
	cl.Close()
	l.Close()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
	assert.Empty(t, reviewNames(t, dir))
}
