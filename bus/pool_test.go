package bus

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/internal/proctest"
)

// rolePoolWorker is a worker process of a WorkerPool: it serves the Reliable subscription
// the pool names, logging "seq attempt" to file 0 with log=1. crash=SEQ exits with
// status 3 on SEQ's first attempt; spin=D busy-works D per event.
func rolePoolWorker(c *proctest.Child) error {
	dir, kv := childConfig(c.Args)
	b, err := openBus(dir, Config{Source: "pool-worker"})
	if err != nil {
		return err
	}
	defer b.Close()
	crash := uint64(atoi(kv["crash"]))
	spin, _ := time.ParseDuration(kv["spin"])
	var log *os.File
	if kv["log"] == "1" {
		log = c.File(0)
	}
	var mu sync.Mutex
	_, err = Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error {
		if crash != 0 && v.Seq == crash && ev.Attempt == 1 {
			os.Exit(3)
		}
		if spin > 0 {
			for start := time.Now(); time.Since(start) < spin; {
			}
		}
		if log != nil {
			mu.Lock()
			fmt.Fprintf(log, "%d %d\n", v.Seq, ev.Attempt)
			mu.Unlock()
		}
		return nil
	}, Delivery(Reliable{Name: os.Getenv(EnvSubscription)}))
	if err != nil {
		return err
	}
	_, err = Serve(context.Background(), b)
	return err
}

func poolCommand(t testing.TB, dir string, log *os.File, args ...string) func(int) *exec.Cmd {
	return func(int) *exec.Cmd {
		cmd, err := proctest.Command("pool-worker", append([]string{dir}, args...)...)
		if err != nil {
			t.Error(err)
			return nil
		}
		if log != nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, log)
			cmd.Args = append(cmd.Args, "log=1")
		}
		cmd.Stderr = os.Stderr
		return cmd
	}
}

// waitWorkers waits until the subscription work has n workers in live processes.
func waitWorkers(t testing.TB, b *Bus, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		h, err := b.Health()
		if err == nil && len(h.Queues) == 1 && h.Queues[0].Workers == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %d workers: %+v %v", n, h.Queues, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A pool of worker processes shares one queue: a worker that crashes holding an event is
// restarted after the delay and the event is delivered again; scaling 2 → 4 → 1 while
// events arrive loses and duplicates none; with every worker process stopped, the
// publishing process's Fallback subscription handles the events, and not before.
func TestWorkerPoolAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	path, log := logFile(t)
	var mu sync.Mutex
	var fallback []uint64
	if _, err := Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error {
		mu.Lock()
		fallback = append(fallback, v.Seq)
		mu.Unlock()
		return nil
	}, Delivery(Reliable{Name: "work"}), Fallback()); err != nil {
		t.Fatal(err)
	}
	pool, err := StartWorkers(b, PoolConfig{Subscription: "work", Workers: 2, RestartDelay: 200 * time.Millisecond, Grace: 20 * time.Second,
		Command: poolCommand(t, dir, log, "crash=150")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pool.Stop(ctx)
	})
	waitWorkers(t, b, 3) // two processes and the fall-back
	time.Sleep(2 * fallbackCheck)
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	handled := func(n int) map[uint64]int {
		deadline := time.Now().Add(60 * time.Second)
		for {
			seen := readLog(t, path)
			mu.Lock()
			for _, s := range fallback {
				seen[s]++
			}
			mu.Unlock()
			if len(seen) >= n || time.Now().After(deadline) {
				return seen
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	exactlyOnce := func(seen map[uint64]int, n int) {
		t.Helper()
		if len(seen) != n {
			t.Fatalf("%d distinct events handled, want %d", len(seen), n)
		}
		for s, c := range seen {
			if c != 1 {
				t.Fatalf("seq %d handled %d times", s, c)
			}
		}
	}

	publish(0, 200)
	exactlyOnce(handled(200), 200)
	if got := readLogAttempts(t, path)[150]; got != 2 {
		t.Fatalf("the crashed worker's event came again at attempt %d, want 2", got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for pool.Stats().Restarts < 1 || pool.Live() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the crashed worker was not restarted: %+v", pool.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	if len(fallback) != 0 {
		t.Fatalf("the fall-back handled %v while workers were alive", fallback)
	}
	mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := pool.ScaleWorkers(ctx, 4); err != nil {
		t.Fatal(err)
	}
	waitWorkers(t, b, 5)
	publish(200, 400)
	if err := pool.ScaleWorkers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	publish(400, 600)
	exactlyOnce(handled(600), 600)
	if st := pool.Stats(); st.Starts != 5 || st.Restarts != 1 {
		t.Fatalf("pool %+v: want 5 starts (2, a restart, 2 more) and 1 restart", st)
	}

	if err := pool.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	publish(600, 650)
	exactlyOnce(handled(650), 650)
	mu.Lock()
	defer mu.Unlock()
	if len(fallback) != 50 {
		t.Fatalf("the fall-back handled %d events, want the 50 published with no worker process", len(fallback))
	}
}

// BenchmarkWorkerPool is a Reliable subscription served by a pool of 1 or 4 worker
// processes whose handler busy-works 10 µs per event, fed by this process as fast as the
// queue takes (BlockWhenFull): events/s handled, from the first publish until every event
// was acknowledged (the subscription's shared delivered counter). Compare procs=4 with
// procs=1 of the same run: on a machine of C free cores the pool cannot go beyond C
// workers' worth, less the publisher's share.
func BenchmarkWorkerPool(b *testing.B) {
	for _, procs := range []int{1, 4} {
		b.Run(fmt.Sprintf("procs=%d", procs), func(b *testing.B) {
			dir := b.TempDir()
			bus := openTest(b, dir, Config{Source: "pub", QueueFull: BlockWhenFull})
			pool, err := StartWorkers(bus, PoolConfig{Subscription: "work", Workers: procs, Command: poolCommand(b, dir, nil, "spin=10us")})
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Stop(context.Background())
			waitWorkers(b, bus, procs)
			m, err := openSubMetrics(bus.name, "work", bus.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer m.close()
			base := m.delivered.Load()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if _, err := Publish(context.Background(), bus, &Tick{Seq: uint64(i)}); err != nil {
					b.Fatal(err)
				}
			}
			for m.delivered.Load()-base < uint64(b.N) {
				time.Sleep(100 * time.Microsecond)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}
