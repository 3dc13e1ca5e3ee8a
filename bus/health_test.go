package bus

import (
	"context"
	"testing"
	"time"

	"github.com/shmq/shmq/internal/proctest"
)

func hasReason(h Health, check string, s State) bool {
	for _, r := range h.Reasons {
		if r.Check == check && r.State == s {
			return true
		}
	}
	return false
}

// Health follows a worker process: healthy while it runs, unhealthy (no_worker) once it was
// killed and events wait, and a full queue and dead letters are reported.
func TestHealthAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub", QueueSlots: 8, MaxEvent: 1008})
	w := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "attempts=1", "fail=5", "queue=8", "maxevent=1008"}})
	w.WaitPoint("ready", 30*time.Second)
	h, err := b.Health()
	if err != nil {
		t.Fatal(err)
	}
	if h.State != Healthy || len(h.Queues) != 1 || h.Queues[0].Workers != 1 {
		t.Fatalf("with a live worker: %+v", h)
	}
	for i := 1; i <= 5; i++ { // seq 5 fails its only attempt: a dead letter
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		h, err = b.Health()
		if err != nil {
			t.Fatal(err)
		}
		if h.DeadLetters == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter: %+v", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if h.State != Degraded || !hasReason(h, "dead_letters", Degraded) {
		t.Fatalf("with a dead letter: %+v", h)
	}
	w.Kill()
	_ = w.Wait(30 * time.Second)
	for i := range 8 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(10 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	h, err = b.Health()
	if err != nil {
		t.Fatal(err)
	}
	if h.State != Unhealthy || !hasReason(h, "no_worker", Unhealthy) || !hasReason(h, "queue_full", Unhealthy) {
		t.Fatalf("worker dead, queue full: %+v", h)
	}
}
