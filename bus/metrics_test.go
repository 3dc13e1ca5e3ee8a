package bus

import (
	"context"
	"testing"
	"time"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/shm"
)

// The metrics live in shared memory: what a worker process and a best-effort subscriber
// process record, this process reads (ReadMetrics), and health judges from it.
func TestMetricsAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	w := proctest.Start(t, "worker", proctest.Options{Args: []string{dir, "attempts=2", "fail=10", "slowfirst=5ms", "exit-after=28"},
		Env: []string{"SHMQ_BUS_SLOW_HANDLER=1ms"}})
	w.WaitPoint("ready", 30*time.Second)
	be := startSub(t, "be-sub", dir)
	for i := 1; i <= 31; i++ { // 10, 20, 30 fail both attempts: dead letters
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var res workerResult
	readResult(t, w, &res)
	// The end marker for the best-effort subscriber, once the worker is gone (its Seq 0
	// would fail in the worker: it stays in the queue).
	if _, err := Publish(context.Background(), b, &Tick{Kind: 99}, WithPriority(envelope.Critical)); err != nil {
		t.Fatal(err)
	}
	var got []uint64
	readResult(t, be, &got)

	m, err := ReadMetrics("tbus", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if m.Published != [envelope.Priorities]uint64{1, 31, 0} {
		t.Fatalf("published %v, want [1 31 0]", m.Published)
	}
	work, ok := m.Find("work", "")
	if !ok {
		t.Fatalf("no metrics of subscription work: %+v", m)
	}
	calls := int64(work.Delivered + work.Failed)
	if work.Delivered != 28 || work.Failed != 6 || work.Retried != 3 || work.DeadLettered != 3 || work.Slow < 31 ||
		work.Latency.Count != calls || work.Handler.Count != calls || work.Latency.P50 <= 0 || work.Handler.P50 < 5*time.Millisecond/2 {
		t.Fatalf("subscription work: %+v", work)
	}
	// The worker's own counters agree with what it recorded in shared memory.
	if st := res.Stats; st.Delivered != work.Delivered || st.Failed != work.Failed || st.DeadLettered != work.DeadLettered {
		t.Fatalf("worker's Stats %+v, shared %+v", st, work)
	}
	// The subscriber counts the end marker once its handler has returned, which may be
	// after it sent its result.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if m, err = ReadMetrics("tbus", shm.Options{Dir: dir}); err != nil {
			t.Fatal(err)
		}
		bem, _ := m.Find("", BestEffort{}.mode())
		if bem.Delivered == 32 && bem.Latency.Count == 32 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("best-effort: %+v, want 32 delivered (31 and the end marker)", bem)
		}
	}

	// Health from this process, which has no subscription: the worker's error rate over
	// the bus's lifetime, its slow handlers since an empty baseline.
	h, err := b.Health()
	if err != nil {
		t.Fatal(err)
	}
	if !hasReason(h, "error_rate", Degraded) || !hasReason(h, "dead_letters", Degraded) {
		t.Fatalf("health: %+v", h.Reasons)
	}
	h, err = Inspect("tbus", shm.Options{Dir: dir}, Thresholds{NearFull: 0.8, MaxErrorRate: 0.5, Previous: &Metrics{}, LastDeadLetters: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !hasReason(h, "slow_handlers", Degraded) || hasReason(h, "error_rate", Degraded) {
		t.Fatalf("inspect: %+v", h.Reasons)
	}
	// Nothing happened since the last Health: no error rate, no slow handlers.
	if h, err = b.Health(); err != nil || hasReason(h, "error_rate", Degraded) || hasReason(h, "slow_handlers", Degraded) {
		t.Fatalf("health again: %+v %v", h.Reasons, err)
	}
}
