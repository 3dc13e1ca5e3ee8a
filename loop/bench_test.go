package loop_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
)

// Benchmarks. Run (on a quiet machine; check `ps aux --sort=-%cpu | head` first):
//
//	go test -run '^$' -bench . -benchtime 2s ./loop
//
// BenchmarkLoopThroughput: ns/msg (and Mmsg/s) of one loop draining 1, 10 and 100 SPSC
// rings fed by writer goroutines; the goal is 100 rings >= 0.8x the throughput of
// 1 ring. BenchmarkLoopIdleCPU: the CPU the whole process uses (getrusage RUSAGE_SELF)
// while a loop sleeps on 100 idle rings for 2 s; the goal is <= 0.1% of a core.

const benchMsg = 64

// BenchmarkLoopThroughput: writers=each is one writer goroutine per ring, each writing its
// share with blocking Write; writers=one is a single goroutine writing every ring in turn,
// 16 messages at a time, so that the writing side costs the same whatever the number of
// rings and the difference is the loop's. 64-byte messages, 64 KiB rings.
func BenchmarkLoopThroughput(b *testing.B) {
	for _, wait := range []ring.Wait{ring.Futex(), ring.Adaptive(0)} {
		for _, writers := range []string{"each", "one"} {
			for _, rings := range []int{1, 10, 100} {
				b.Run(fmt.Sprintf("%s/writers=%s/rings=%d", wait.Name(), writers, rings), func(b *testing.B) {
					benchThroughput(b, wait, writers == "one", rings)
				})
			}
		}
	}
}

func benchThroughput(b *testing.B, wait ring.Wait, oneWriter bool, rings int) {
	opts := testOpts(b)
	perRing := (b.N + rings - 1) / rings
	total := int64(perRing * rings)
	l := loop.New(loop.Options{Wait: wait})
	var handled atomic.Int64
	done := make(chan struct{})
	ws := make([]ring.Writer, rings)
	for i := range rings {
		seg := create(b, opts, ringName(i), ring.Spec{Kind: ring.SPSC, Size: 64 << 10})
		r, err := ring.NewSPSCReader(seg, ring.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		if _, err := l.Add(r, func(rec ring.Record) error {
			if len(rec.Data) != benchMsg {
				return fmt.Errorf("record of %d bytes", len(rec.Data))
			}
			if handled.Add(1) == total {
				close(done)
			}
			return nil
		}, nil); err != nil {
			b.Fatal(err)
		}
		if ws[i], err = ring.NewSPSCWriter(seg, ring.Options{Wait: ring.Futex()}); err != nil {
			b.Fatal(err)
		}
		defer ws[i].Close()
	}
	runErr := make(chan error, 1)
	go func() { runErr <- l.Run(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var failed atomic.Value
	write := func(ws []ring.Writer) {
		msg := make([]byte, benchMsg)
		sent := make([]int, len(ws))
		for left := len(ws); left > 0; {
			for k, w := range ws {
				burst := min(16, perRing-sent[k])
				if burst == 0 {
					continue
				}
				if len(ws) == 1 {
					burst = perRing
				}
				for range burst {
					if err := w.Write(ctx, 1, msg); err != nil {
						failed.CompareAndSwap(nil, err)
						return
					}
				}
				if sent[k] += burst; sent[k] == perRing {
					left--
				}
			}
		}
	}
	time.Sleep(10 * time.Millisecond) // the loop asleep
	b.ResetTimer()
	var wg sync.WaitGroup
	if oneWriter {
		wg.Go(func() { write(ws) })
	} else {
		for i := range ws {
			wg.Go(func() { write(ws[i : i+1]) })
		}
	}
	wg.Wait()
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("handled %d of %d", handled.Load(), total)
	}
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total), "ns/msg")
	b.ReportMetric(float64(total)/b.Elapsed().Seconds()/1e6, "Mmsg/s")
	l.Stop()
	if err := <-runErr; err != nil {
		b.Fatal(err)
	}
}

// processCPU is the user plus system CPU time of the whole process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLoopIdleCPU: a loop asleep on idle rings (each with a writer attached), for 2 s
// per iteration: cpu% is the process's CPU time (getrusage RUSAGE_SELF, the Go runtime's
// own included) over the wall time, in % of one core. no-loop is the same process with no
// loop running: the floor. rings=130 is past futex_waitv's 128 words (the loop polls every
// millisecond).
func BenchmarkLoopIdleCPU(b *testing.B) {
	cases := []struct {
		name  string
		wait  ring.Wait
		rings int
	}{
		{"no-loop", ring.Futex(), 0},
		{"futex/rings=100", ring.Futex(), 100},
		{"adaptive/rings=100", ring.Adaptive(0), 100},
		{"futex/rings=130", ring.Futex(), 130},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			opts := testOpts(b)
			l := loop.New(loop.Options{Wait: c.wait})
			var handled atomic.Int64
			for i := range c.rings {
				seg := create(b, opts, ringName(i), ring.Spec{Kind: ring.SPSC, Size: 4096})
				r, err := ring.NewSPSCReader(seg, ring.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				if _, err := l.Add(r, func(ring.Record) error { handled.Add(1); return nil }, nil); err != nil {
					b.Fatal(err)
				}
				w, err := ring.NewSPSCWriter(seg, ring.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer w.Close()
			}
			runErr := make(chan error, 1)
			if c.rings > 0 {
				go func() { runErr <- l.Run(context.Background()) }()
			} else {
				runErr <- nil
			}
			time.Sleep(100 * time.Millisecond) // past start-up and the adaptive spin
			cpu0, start := processCPU(b), time.Now()
			for range b.N {
				time.Sleep(2 * time.Second)
			}
			cpu, wall := processCPU(b)-cpu0, time.Since(start)
			b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu%")
			l.Stop()
			if err := <-runErr; err != nil {
				b.Fatal(err)
			}
			if handled.Load() != 0 {
				b.Fatalf("%d records from idle rings", handled.Load())
			}
		})
	}
}
