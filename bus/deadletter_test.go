package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/shmq/shmq/dlq"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/shm"
)

// Dead letters of a worker process are replayed into the queue of the subscription that
// failed them, from attempt 1, and only there: another subscription does not get them
// again. Replaying to a subscription that was removed stops with ErrSubscriberUnavailable
// and keeps the entry.
func TestReplayDeadLettersAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	opts := shm.Options{Dir: dir}
	b := openTest(t, dir, Config{Source: "pub"})
	other := make(chan uint64, 100)
	if _, err := Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error { other <- v.Seq; return nil },
		Delivery(Reliable{Name: "other"})); err != nil {
		t.Fatal(err)
	}
	w := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "attempts=1", "fail=10", "exit-after=28"}})
	w.WaitPoint("ready", 30*time.Second)
	for i := 1; i <= 31; i++ { // 10, 20, 30 fail their one attempt
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}, WithPriority(envelope.Priority(i%3))); err != nil {
			t.Fatal(err)
		}
	}
	var res workerResult
	readResult(t, w, &res)
	for range 31 {
		select {
		case <-other:
		case <-time.After(30 * time.Second):
			t.Fatal("subscription other did not get the 31 events")
		}
	}
	dl := readDeadLetters(t, dir)
	if len(dl) != 3 {
		t.Fatalf("dead letters %+v", dl)
	}
	for _, d := range dl { // each names the lane it came from
		var seq int
		if _, err := fmt.Sscanf(d.Err, "seq %d refused", &seq); err != nil || d.Priority != envelope.Priority(seq%3) || d.Subscription != "work" {
			t.Fatalf("dead letter %+v", d)
		}
	}

	n, err := ReplayDeadLetters(context.Background(), "tbus", opts, ReplayOptions{})
	if n != 3 || err != nil {
		t.Fatalf("replay: %d, %v", n, err)
	}
	if dl := readDeadLetters(t, dir); len(dl) != 0 {
		t.Fatalf("%d dead letters left after the replay", len(dl))
	}
	path, log := logFile(t)
	w2 := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "exit-after=3"}, Files: []*os.File{log}})
	readResult(t, w2, &res)
	seen := readLogAttempts(t, path)
	if len(seen) != 3 || seen[10] != 1 || seen[20] != 1 || seen[30] != 1 {
		t.Fatalf("second worker handled %v (seq → attempt), want 10, 20 and 30 at attempt 1", seen)
	}
	select {
	case s := <-other:
		t.Fatalf("subscription other got seq %d again", s)
	case <-time.After(200 * time.Millisecond):
	}

	// Republish: the event goes to every subscription again.
	w3 := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "attempts=1", "fail=10", "exit-after=1"}})
	w3.WaitPoint("ready", 30*time.Second)
	for _, seq := range []uint64{40, 41} {
		if _, err := Publish(context.Background(), b, &Tick{Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	readResult(t, w3, &res)
	for range 2 {
		<-other
	}
	if n, err := b.ReplayDeadLetters(context.Background(), ReplayOptions{Republish: true}); n != 1 || err != nil {
		t.Fatalf("republish: %d, %v", n, err)
	}
	select {
	case s := <-other:
		if s != 40 {
			t.Fatalf("other got %d", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the republished event did not reach subscription other")
	}

	// A dead letter of a subscription that is gone stays.
	w4 := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "attempts=1", "fail=10", "exit-after=1"}})
	w4.WaitPoint("ready", 30*time.Second)
	for _, seq := range []uint64{50, 51} {
		if _, err := Publish(context.Background(), b, &Tick{Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	readResult(t, w4, &res)
	if _, err := b.reg.remove("work"); err != nil {
		t.Fatal(err)
	}
	if n, err := ReplayDeadLetters(context.Background(), "tbus", opts, ReplayOptions{}); n != 0 || !errors.Is(err, ErrSubscriberUnavailable) {
		t.Fatalf("replay to a removed subscription: %d, %v", n, err)
	}
	// 40 (republished to work as well, it failed there again) and 50 stay.
	if dl := readDeadLetters(t, dir); len(dl) != 2 {
		t.Fatalf("%d dead letters, want the two that could not be replayed", len(dl))
	}
}

// readLogAttempts reads a worker log: seq → attempt of its last handling.
func readLogAttempts(t *testing.T, path string) map[uint64]uint32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]uint32{}
	var seq uint64
	var attempt uint32
	for _, line := range splitLines(string(b)) {
		if _, err := fmtSscan(line, &seq, &attempt); err == nil {
			out[seq] = attempt
		}
	}
	return out
}

// A full dead-letter queue loses nothing: the worker holds its failed event, health says
// unhealthy (dead_letters_full), and once an operator purges the queue the held events
// land in it.
func TestDeadLetterQueueFullHolds(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub", DeadLetterLimit: 2})
	capacity := b.dlq.Cap()
	w := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "attempts=1", "fail=1"}, Env: []string{"SHMQ_BUS_DLQ_SLOTS=2"}})
	w.WaitPoint("ready", 30*time.Second)
	for i := range capacity + 2 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	var h Health
	for {
		var err error
		if h, err = b.Health(); err != nil {
			t.Fatal(err)
		}
		if hasReason(h, "dead_letters_full", Unhealthy) && h.Queues[0].Depth >= 1 {
			break // the worker holds one, one waits
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %+v", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	q, err := dlq.Open(dlqName("tbus"), shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if n, err := q.Purge(); n != capacity || err != nil {
		t.Fatalf("purge: %d, %v", n, err)
	}
	for deadline = time.Now().Add(30 * time.Second); ; {
		if n, _ := q.Len(); n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the held events did not reach the dead-letter queue after the purge")
		}
		time.Sleep(20 * time.Millisecond)
	}
	m, err := ReadMetrics("tbus", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if work, _ := m.Find("work", ""); work.DeadLettered != uint64(capacity+2) || work.DLQErrors == 0 {
		t.Fatalf("metrics %+v", work)
	}
}
