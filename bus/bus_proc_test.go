package bus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/shm"
)

func startSub(t *testing.T, role, dir string, args ...string) *proctest.Proc {
	t.Helper()
	p := proctest.Start(t, role, proctest.Options{Args: append([]string{dir}, args...)})
	p.WaitPoint("ready", 30*time.Second)
	return p
}

// A BestEffort subscriber in another process gets every event published after Subscribe
// returned, in order, when it keeps up (the lane holds all of them).
func TestBestEffortAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	sub := startSub(t, "be-sub", dir)
	const n = 2000
	for i := range n {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Publish(context.Background(), b, &Tick{Kind: 99}); err != nil {
		t.Fatal(err)
	}
	var got []uint64
	readResult(t, sub, &got)
	if len(got) != n {
		t.Fatalf("got %d events, want %d", len(got), n)
	}
	for i, s := range got {
		if s != uint64(i) {
			t.Fatalf("event %d is seq %d", i, s)
		}
	}
}

// Filters: a subscriber with FromSources("a") gets only the events of publisher a, and one
// with a predicate only the Critical ones.
func TestFiltersAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "main"})
	bySource := startSub(t, "be-sub", dir, "source=a")
	byPred := startSub(t, "be-sub", dir, "critical-only=1")
	pa := proctest.Start(t, "publisher", proctest.Options{Args: []string{dir, "source=a", "n=100"}})
	pb := proctest.Start(t, "publisher", proctest.Options{Args: []string{dir, "source=b", "n=100"}})
	for _, p := range []*proctest.Proc{pa, pb} {
		if err := p.Wait(30 * time.Second); err != nil {
			t.Fatalf("%v\n%s", err, p.Output())
		}
	}
	for i := range 10 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(1000 + i)}, WithPriority(envelope.Critical)); err != nil {
			t.Fatal(err)
		}
	}
	// The end marker must pass both filters: from source a (a publisher child) ... the
	// source filter child ends on a's Kind 99, the predicate child on a Critical one.
	pe := proctest.Start(t, "publisher", proctest.Options{Args: []string{dir, "source=a", "n=0", "end=1"}})
	if err := pe.Wait(30 * time.Second); err != nil {
		t.Fatalf("%v\n%s", err, pe.Output())
	}
	if _, err := Publish(context.Background(), b, &Tick{Kind: 99}, WithPriority(envelope.Critical)); err != nil {
		t.Fatal(err)
	}
	var fromA, critical []uint64
	readResult(t, bySource, &fromA)
	readResult(t, byPred, &critical)
	if len(fromA) != 100 {
		t.Fatalf("source filter: %d events, want the 100 of source a", len(fromA))
	}
	for i, s := range fromA {
		if s != uint64(i) {
			t.Fatalf("source filter: event %d is seq %d", i, s)
		}
	}
	if len(critical) != 10 || critical[0] != 1000 {
		t.Fatalf("predicate filter: got %v, want the 10 critical events 1000..1009", critical)
	}
}

// LatestOnly: a subscriber that takes 20 ms per event, fed 1000 events at full speed, sees
// far fewer of them, in increasing order, and the last one.
func TestLatestOnlyAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	sub := startSub(t, "latest-sub", dir)
	const n = 1000
	for i := range n {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // let the subscriber deliver the newest before the end marker
	if _, err := Publish(context.Background(), b, &Tick{Kind: 99}); err != nil {
		t.Fatal(err)
	}
	var got []uint64
	readResult(t, sub, &got)
	if len(got) == 0 || len(got) > n/4 {
		t.Fatalf("saw %d of %d events: want a few (only the newest while busy)", len(got), n)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("not increasing: %v", got)
		}
	}
	if got[len(got)-1] != n-1 {
		t.Fatalf("last seen %d, want the newest, %d", got[len(got)-1], n-1)
	}
}

// readLog reads a worker log: seq → times handled.
func readLog(t *testing.T, path string) map[uint64]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[uint64]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 {
			continue // a line cut by a SIGKILL
		}
		s, err := strconv.ParseUint(fields[0], 10, 64)
		if err == nil {
			out[s]++
		}
	}
	return out
}

func logFile(t *testing.T) (string, *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "handled.log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return path, f
}

// Reliable: a worker process SIGKILLed in the middle of the stream loses nothing: a worker
// started after it handles what it held and everything queued, so every published event is
// handled at least once.
func TestReliableWorkerKilledLosesNothing(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	path, log := logFile(t)
	w1 := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "sleep=100us"}, Files: []*os.File{log}, KillAt: "handled-300"})
	w1.WaitPoint("ready", 30*time.Second)
	const n = 2000
	for i := range n {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	w1.WaitPoint("handled-300", 60*time.Second)
	if err := w1.Wait(30 * time.Second); err == nil || !w1.Killed() {
		t.Fatalf("worker 1 was not killed: %v", err)
	}
	w2 := proctest.Start(t, "worker", proctest.Options{Args: []string{dir}, Files: []*os.File{log}})
	deadline := time.Now().Add(60 * time.Second)
	for {
		seen := readLog(t, path)
		if len(seen) == n {
			// The event worker 1 held when it died (logged, never acknowledged) came again.
			again := 0
			for _, c := range seen {
				if c > 1 {
					again++
				}
			}
			if again == 0 {
				t.Fatalf("no event was handled twice: the killed worker's event was not delivered again")
			}
			break
		}
		if time.Now().After(deadline) {
			missing := []uint64{}
			for i := range uint64(n) {
				if seen[i] == 0 && len(missing) < 20 {
					missing = append(missing, i)
				}
			}
			t.Fatalf("%d of %d events handled; missing %v\n%s", len(seen), n, missing, w2.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A Reliable subscription made in another process after this publisher opened the bus gets
// every event published after Subscribe returned (the publisher rereads the registry).
func TestReliableLateSubscriber(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	if _, err := Publish(context.Background(), b, &Tick{Seq: 12345}); err != nil { // before any subscription
		t.Fatal(err)
	}
	path, log := logFile(t)
	w := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "exit-after=100"}, Files: []*os.File{log}})
	w.WaitPoint("ready", 30*time.Second)
	for i := range 100 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var res workerResult
	readResult(t, w, &res)
	seen := readLog(t, path)
	if len(seen) != 100 || seen[12345] != 0 {
		t.Fatalf("handled %d distinct events (%v), want the 100 published after Subscribe", len(seen), seen[12345])
	}
}

// Priorities: with Critical and Low events queued, a worker takes them 8:1 (the default
// weights), and a Critical event published behind 500 queued Normal ones is handled among
// the first.
func TestPriorityWeightsAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	// Create the subscription (and its queue) in a worker that exits at once, so that
	// events queue with no worker running.
	w0 := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "exit-after=1"}})
	w0.WaitPoint("ready", 30*time.Second)
	if _, err := Publish(context.Background(), b, &Tick{Seq: 999999}); err != nil {
		t.Fatal(err)
	}
	var r0 workerResult
	readResult(t, w0, &r0)
	for i := range 900 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}, WithPriority(envelope.Critical)); err != nil {
			t.Fatal(err)
		}
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}, WithPriority(envelope.Low)); err != nil {
			t.Fatal(err)
		}
	}
	w := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "exit-after=900"}})
	var res workerResult
	readResult(t, w, &res)
	crit, low := 0, 0
	for _, o := range res.Order[:90] {
		switch {
		case strings.HasPrefix(o, "critical:"):
			crit++
		case strings.HasPrefix(o, "low:"):
			low++
		}
	}
	t.Logf("first 90 handled: %d critical, %d low", crit, low)
	if crit != 80 || low != 10 {
		t.Fatalf("first 90 handled: %d critical, %d low; want 80 and 10 (weights 8:1)", crit, low)
	}

	// Overtaking: 500 Normal queued, then 5 Critical: the Critical ones come first.
	for i := range 500 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(5000 + i)}, WithPriority(envelope.Critical)); err != nil {
			t.Fatal(err)
		}
	}
	w2 := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "exit-after=505"}})
	readResult(t, w2, &res)
	for i := range 5 {
		if !strings.HasPrefix(res.Order[i], "critical:") {
			t.Fatalf("handled %v first: the 5 critical events did not overtake the queued normal ones", res.Order[:10])
		}
	}
}

// Retries and dead letters: an event whose handler always fails is tried MaxAttempts
// times, then lands in the dead-letter queue with its last error and attempt count; an
// event that fails twice then succeeds is handled on attempt 3.
func TestRetryThenDeadLetter(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	w := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "attempts=3", "fail=10", "failfirst=2", "exit-after=19"}})
	w.WaitPoint("ready", 30*time.Second)
	for i := 1; i <= 21; i++ { // seq 10 and 20 always fail; 21 ends the run after both
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var res workerResult
	readResult(t, w, &res)
	if res.Stats.Delivered != 19 || res.Stats.DeadLettered != 2 || res.Stats.Retried != 19*2+2*2 {
		t.Fatalf("stats %+v: want 19 delivered, 2 dead-lettered, 42 retries", res.Stats)
	}
	dl := readDeadLetters(t, dir)
	if len(dl) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dl))
	}
	for _, d := range dl {
		v, err := envelope.Parse(d.Data)
		if err != nil {
			t.Fatal(err)
		}
		if d.Attempts != 3 || d.Subscription != "work" || d.Priority != envelope.Normal || !strings.Contains(d.Err, "refused") ||
			!v.IsType("tick") || v.Attempt != 1 || d.Origin != queueName("tbus", "work", envelope.Normal) {
			t.Fatalf("dead letter %+v (attempt %d)", d, v.Attempt)
		}
	}
}

// readDeadLetters lists the dead-letter queue.
func readDeadLetters(t *testing.T, dir string) []DeadLetter {
	t.Helper()
	dl, err := DeadLetters("tbus", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return dl
}

// Unsubscribe removes a Reliable subscription: publishers stop queueing for it (no
// ErrQueueFull however many are published) and its queue segments are gone.
func TestUnsubscribeAndQueueFull(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub", QueueSlots: 4, MaxEvent: 1008})
	sub, err := Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error { return nil },
		Delivery(Reliable{Name: "q"}))
	if err != nil {
		t.Fatal(err)
	}
	sub.Close() // durable: events queue with no worker
	for i := range 4 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if _, err := Publish(context.Background(), b, &Tick{Seq: 4}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("fifth publish into a queue of 4: %v, want ErrQueueFull", err)
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatalf("after Unsubscribe: %v", err)
		}
	}
	for _, name := range []string{queueName("tbus", "q", envelope.Normal), subMetricsName("tbus", "q")} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Fatalf("segment %s after Unsubscribe: %v", name, err)
		}
	}
}

// Reliable{Timeout}: a handler that returns later than Timeout fails the attempt with
// ErrDeliveryTimeout, and the event is delivered again.
func TestReliableTimeoutRedelivers(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	path, log := logFile(t)
	w := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "attempts=5", "slowfirst=50ms", "timeout=10ms", "exit-after=10"}, Files: []*os.File{log}})
	w.WaitPoint("ready", 30*time.Second)
	for i := range 5 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var res workerResult
	readResult(t, w, &res)
	if res.Stats.Timeouts != 5 || res.Stats.Delivered != 5 || res.Stats.Retried != 5 {
		t.Fatalf("stats %+v: want 5 timeouts, 5 retries, 5 delivered", res.Stats)
	}
	if seen := readLog(t, path); len(seen) != 5 {
		t.Fatalf("handled %v", seen)
	}
}

// A handler that ignores its ctx and hangs does not hold its worker or its event: at
// twice the Timeout the worker is abandoned, the event goes to a new worker as the next
// attempt, and closing the subscription does not wait for the hung handler.
func TestReliableHungHandlerAbandoned(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	path, log := logFile(t)
	w := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "attempts=3", "hang=5", "timeout=50ms", "exit-after=10"}, Files: []*os.File{log}})
	w.WaitPoint("ready", 30*time.Second)
	for i := 1; i <= 10; i++ {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var res workerResult
	readResult(t, w, &res) // the worker closed its subscription: Close did not wait for the hung handler
	seen := readLogAttempts(t, path)
	if len(seen) != 10 || seen[5] != 2 {
		t.Fatalf("handled %v (seq → attempt): want 1..10, 5 at attempt 2", seen)
	}
	if st := res.Stats; st.Abandoned != 1 || st.Timeouts != 1 || st.Delivered != 10 || st.Workers != 1 {
		t.Fatalf("stats %+v: want 1 abandoned worker (a timeout), 10 delivered, 1 worker", st)
	}

	// An event that hangs every attempt goes to the dead-letter queue after the last one,
	// without a further run.
	w2 := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "attempts=2", "hang=20", "hangall=1", "timeout=50ms"}})
	w2.WaitPoint("ready", 30*time.Second)
	if _, err := Publish(context.Background(), b, &Tick{Seq: 20}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		dl := readDeadLetters(t, dir)
		if len(dl) == 1 {
			if dl[0].Attempts != 2 || !strings.Contains(dl[0].Err, "died or hung") {
				t.Fatalf("dead letter %+v", dl[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter: %v", dl)
		}
	}
}

// ScaleWorkers: a worker process scales from 1 to 4 goroutines and back to 1 while events
// arrive; every event is handled exactly once.
func TestScaleWorkersNoLossNoDuplicate(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	path, log := logFile(t)
	const n = 1000
	w := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "sleep=200us", "scale=4@200,1@600", fmt.Sprintf("exit-after=%d", n)}, Files: []*os.File{log}})
	w.WaitPoint("ready", 30*time.Second)
	for i := range n {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var res workerResult
	readResult(t, w, &res)
	seen := readLog(t, path)
	if len(seen) != n {
		t.Fatalf("handled %d distinct events, want %d", len(seen), n)
	}
	for s, c := range seen {
		if c != 1 {
			t.Fatalf("seq %d handled %d times", s, c)
		}
	}
	if !strings.Contains(w.Output(), "scaled to 4") || !strings.Contains(w.Output(), "scaled to 1") || res.Stats.Workers != 1 {
		t.Fatalf("worker did not scale (workers %d):\n%s", res.Stats.Workers, w.Output())
	}
}

// Shutdown: Publish fails with ErrShuttingDown, the report names what was left in the
// queue, and the events stay there for the next worker.
func TestShutdownReportsLeftovers(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	block, entered := make(chan struct{}), make(chan struct{}, 10)
	sub, err := Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error {
		entered <- struct{}{}
		<-block
		return nil
	}, Delivery(Reliable{Name: "slow"}))
	if err != nil {
		t.Fatal(err)
	}
	_ = sub
	for i := range 10 {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-entered // the worker holds the first event when Shutdown begins
	go func() { time.Sleep(300 * time.Millisecond); close(block) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := b.Shutdown(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Publish(context.Background(), b, &Tick{}); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("Publish after Shutdown: %v", err)
	}
	if rep.Queued["slow"] != 9 || len(rep.Unfinished) != 0 {
		t.Fatalf("report %+v: want 9 left in the queue (1 handled), none unfinished", rep)
	}
	b2 := openTest(t, dir, Config{Source: "pub"})
	got := make(chan uint64, 20)
	if _, err := Subscribe(b2, func(ctx context.Context, ev *envelope.View, v *Tick) error { got <- v.Seq; return nil },
		Delivery(Reliable{Name: "slow"})); err != nil {
		t.Fatal(err)
	}
	for range 9 {
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("the events left at shutdown were not delivered to the next worker")
		}
	}
}
