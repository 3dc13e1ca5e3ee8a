package bus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/shm"
)

// A Reliable queue is bounded in bytes as well as in events: with QueueBytes for three
// events, the fourth finds the queue full (or waits, with BlockWhenFull) though slots are
// free; once a worker process has handled them the bytes are counted down and publishing
// works again.
func TestQueueBoundedByBytes(t *testing.T) {
	dir := t.TempDir()
	const event = 128 // a Tick's envelope from source "pub"
	b := openTest(t, dir, Config{Source: "pub", QueueBytes: 3 * event})
	blocking := openTest(t, dir, Config{Source: "pub", QueueBytes: 3 * event, QueueFull: BlockWhenFull})
	w0 := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "exit-after=1"}})
	w0.WaitPoint("ready", 30*time.Second)
	if _, err := Publish(context.Background(), b, &Tick{Seq: 100}); err != nil {
		t.Fatal(err)
	}
	var res workerResult
	readResult(t, w0, &res) // the subscription stays, with no worker
	for i := range 3 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if _, err := Publish(context.Background(), b, &Tick{Seq: 3}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("fourth event: %v, want ErrQueueFull", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Publish(ctx, blocking, &Tick{Seq: 3}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fourth event, blocking: %v, want the context's deadline", err)
	}
	m, err := ReadMetrics("tbus", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if work, _ := m.Find("work", ""); work.QueueBytes != 3*event || work.QueueFull != 2 {
		t.Fatalf("metrics: %d bytes queued, %d full, want %d and 2", work.QueueBytes, work.QueueFull, 3*event)
	}

	// A blocked publisher goes on when a worker makes room.
	done := make(chan error, 1)
	go func() { _, err := Publish(context.Background(), blocking, &Tick{Seq: 4}); done <- err }()
	w := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "exit-after=4"}})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the blocked publisher did not go on")
	}
	readResult(t, w, &res)
	if m, err = ReadMetrics("tbus", shm.Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if work, _ := m.Find("work", ""); work.QueueBytes != 0 {
		t.Fatalf("%d bytes counted after the worker handled everything", work.QueueBytes)
	}
	if _, err := Publish(context.Background(), b, &Tick{Seq: 5}); err != nil {
		t.Fatal(err)
	}
}

// Config.Rate limits this process's publishing (a token bucket of Burst): 60 events at 200/s
// with a burst of 10 take at least 250 ms (asserted as a lower bound only: a loaded machine
// is slower, never faster), every one arrives, and a publish that would wait past its
// context's deadline returns the context's error.
func TestRateLimit(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub", Rate: 200, Burst: 10})
	got := make(chan uint64, 100)
	if _, err := Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error { got <- v.Seq; return nil },
		Delivery(Reliable{Name: "limited"})); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 60 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("60 events at 200/s (burst 10) published in %v, want at least 250ms", d)
	}
	for range 60 {
		select {
		case <-got:
		case <-time.After(30 * time.Second):
			t.Fatal("an event published under the rate limit was not delivered")
		}
	}
	slow := openTest(t, dir, Config{Source: "pub", Rate: 1, Burst: 1})
	if _, err := Publish(context.Background(), slow, &Tick{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := Publish(ctx, slow, &Tick{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish with the bucket empty for a second and 1ms to wait: %v", err)
	}
}
