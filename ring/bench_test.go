package ring_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// Benchmarks. Run: go test -run '^$' -bench . -benchtime 2s ./ring
// Cross-process benchmarks start the other side as a child process of the test binary.

var benchSizes = []int{8, 64, 1024, 64 << 10}

func sizeName(n int) string {
	if n >= 1024 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

func ringSize(msg int) uint64 { return max(uint64(1<<20), shm.NextPow2(uint64(msg)*16)) }

// BenchmarkSPSCInProcess: one goroutine writes and reads each message: the ring's own cost.
func BenchmarkSPSCInProcess(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			_, w, r := newSPSC(b, ringSize(size), ring.Options{})
			msg := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				p, err := w.TryReserve(1, size)
				if err != nil {
					b.Fatal(err)
				}
				copy(p, msg)
				w.Commit()
				rec, err := r.TryNext()
				if err != nil || len(rec.Data) != size {
					b.Fatal(err)
				}
				r.Release()
			}
		})
	}
}

// BenchmarkInProcessBatch: one goroutine reserves 32 messages with one ReserveBatch,
// commits them with one Commit and drains them with one Drain; ns/op is per message.
func BenchmarkInProcessBatch(b *testing.B) {
	const batch = 32
	for _, spec := range []ring.Spec{{Kind: ring.SPSC, Size: 1 << 20}, {Kind: ring.MPMC, Size: 1 << 20, SlotSize: 128}} {
		b.Run(spec.Kind.String(), func(b *testing.B) {
			seg := newSegment(b, testDir(b), "x", spec)
			w, err := ring.NewWriter(seg, ring.Options{})
			if err != nil {
				b.Fatal(err)
			}
			r, err := ring.NewReader(seg, ring.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			defer r.Close()
			msg := make([]byte, 64)
			ctx := context.Background()
			sink := 0
			fn := func(rec ring.Record) error { sink += len(rec.Data); return nil }
			var recs [][]byte
			b.SetBytes(64 * batch)
			b.ReportAllocs()
			for b.Loop() {
				if recs, err = w.ReserveBatch(ctx, 1, len(msg), batch, recs[:0]); err != nil || len(recs) != batch {
					b.Fatal(len(recs), err)
				}
				for _, p := range recs {
					copy(p, msg)
				}
				w.Commit()
				if got, err := r.Drain(ctx, fn, 0); err != nil || got != batch {
					b.Fatal(got, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/msg")
		})
	}
}

// BenchmarkMPMCInProcess is BenchmarkSPSCInProcess for the MPMC ring.
func BenchmarkMPMCInProcess(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			slot := uint32(shm.NextPow2(uint64(size + 16)))
			seg := newMPMCSeg(b, max(16, uint64(1<<20)/uint64(slot)), slot)
			w, _ := ring.NewMPMCWriter(seg, ring.Options{})
			r, _ := ring.NewMPMCReader(seg, ring.Options{})
			defer w.Close()
			defer r.Close()
			msg := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if err := w.TryWrite(1, msg); err != nil {
					b.Fatal(err)
				}
				rec, err := r.TryNext()
				if err != nil || len(rec.Data) != size {
					b.Fatal(err)
				}
				r.Release()
			}
		})
	}
}

// runBenchDrain reads everything until the stream closes (SPSC or MPMC by the segment kind).
func runBenchDrain(c *proctest.Child) error {
	cfg, opts, seg, err := parseConfig(c)
	if err != nil {
		return err
	}
	ctx := context.Background()
	count := 0
	fn := func(rec ring.Record) error { count++; return nil }
	type drainer interface {
		Drain(context.Context, func(ring.Record) error, int) (int, error)
		Close() error
	}
	var r drainer
	if seg.Descriptor().Kind == ring.SPSC {
		r, err = ring.NewSPSCReader(seg, opts)
	} else {
		r, err = ring.NewMPMCReader(seg, opts)
	}
	if err != nil {
		return err
	}
	_ = cfg
	c.Point("ready")
	for {
		if _, err := r.Drain(ctx, fn, 0); err != nil {
			if errors.Is(err, ring.ErrEndOfStream) {
				return c.Result(count)
			}
			return err
		}
	}
}

// BenchmarkSPSCCrossProcess: this process writes, a child process reads (spin), batches of
// 32 records per commit and Drain on the reader side.
func BenchmarkSPSCCrossProcess(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			dir := testDir(b)
			seg := newSegment(b, dir, "x", ring.Spec{Kind: ring.SPSC, Size: ringSize(size)})
			cfg := procConfig{Dir: dir, Name: "x", Wait: "spin"}
			child := proctest.Start(b, "bench-drain", proctest.Options{Args: cfg.args()})
			child.WaitPoint("ready", 20*time.Second)
			w, err := ring.NewSPSCWriter(seg, ring.Options{Wait: ring.Spin()})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			msg := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			n, batch := 0, 32
			for b.Loop() {
				p, err := w.Reserve(ctx, 1, size)
				if err != nil {
					b.Fatal(err)
				}
				copy(p, msg)
				if n++; n%batch == 0 {
					w.Commit()
				}
			}
			if n%batch != 0 {
				w.Commit()
			}
			w.Close()
			var got int
			if err := child.Result(0, &got, time.Minute); err != nil || got != n {
				b.Fatalf("reader got %d of %d: %v", got, n, err)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds()/1e6, "Mmsg/s")
		})
	}
}

// BenchmarkMPMCCrossProcess: this process writes, a child process reads (spin).
func BenchmarkMPMCCrossProcess(b *testing.B) {
	for _, size := range []int{8, 64, 1024} {
		b.Run(sizeName(size), func(b *testing.B) {
			dir := testDir(b)
			slot := uint32(shm.NextPow2(uint64(size + 16)))
			seg := newSegment(b, dir, "x", ring.Spec{Kind: ring.MPMC, Size: uint64(slot) * 4096, SlotSize: slot})
			cfg := procConfig{Dir: dir, Name: "x", Wait: "spin"}
			child := proctest.Start(b, "bench-drain", proctest.Options{Args: cfg.args()})
			child.WaitPoint("ready", 20*time.Second)
			w, err := ring.NewMPMCWriter(seg, ring.Options{Wait: ring.Spin()})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			msg := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if err := w.Write(ctx, 1, msg); err != nil {
					b.Fatal(err)
				}
				n++
			}
			w.Close() // the only writer: its Close ends the stream
			var got int
			if err := child.Result(0, &got, time.Minute); err != nil || got != n {
				b.Fatalf("reader got %d of %d: %v", got, n, err)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds()/1e6, "Mmsg/s")
		})
	}
}

// BenchmarkMPMCCrossProcessBatch: this process writes 64-byte messages in batches of 32
// (one ReserveBatch, one Commit), a child process reads them with Drain (spin).
func BenchmarkMPMCCrossProcessBatch(b *testing.B) {
	const size, batch = 64, 32
	dir := testDir(b)
	slot := uint32(shm.NextPow2(uint64(size + 16)))
	seg := newSegment(b, dir, "x", ring.Spec{Kind: ring.MPMC, Size: uint64(slot) * 4096, SlotSize: slot})
	cfg := procConfig{Dir: dir, Name: "x", Wait: "spin"}
	child := proctest.Start(b, "bench-drain", proctest.Options{Args: cfg.args()})
	child.WaitPoint("ready", 20*time.Second)
	w, err := ring.NewMPMCWriter(seg, ring.Options{Wait: ring.Spin()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	msg := make([]byte, size)
	b.SetBytes(size)
	b.ReportAllocs()
	n := 0
	var recs [][]byte
	for b.Loop() {
		if recs, err = w.ReserveBatch(ctx, 1, size, batch, recs[:0]); err != nil {
			b.Fatal(err)
		}
		for _, p := range recs {
			copy(p, msg)
		}
		w.Commit()
		n += len(recs)
	}
	w.Close()
	var got int
	if err := child.Result(0, &got, time.Minute); err != nil || got != n {
		b.Fatalf("reader got %d of %d: %v", got, n, err)
	}
	// ns/op is per batch of up to 32 (fewer when the ring is nearly full).
	b.ReportMetric(float64(n)/b.Elapsed().Seconds()/1e6, "Mmsg/s")
}

// runBenchEcho echoes every 8-byte message from Name back on PongName.
func runBenchEcho(c *proctest.Child) error {
	return runPonger(c)
}

// BenchmarkSPSCPingPong: a round trip through two SPSC rings to a child process and back;
// one-way latency is half of it.
func BenchmarkSPSCPingPong(b *testing.B) {
	for _, wait := range []string{"spin", "adaptive", "futex"} {
		b.Run(wait, func(b *testing.B) {
			dir := testDir(b)
			ping := newSegment(b, dir, "ping", ring.Spec{Kind: ring.SPSC, Size: 4096})
			pong := newSegment(b, dir, "pong", ring.Spec{Kind: ring.SPSC, Size: 4096})
			cfg := procConfig{Dir: dir, Name: "ping", PongName: "pong", Wait: wait}
			child := proctest.Start(b, "bench-echo", proctest.Options{Args: cfg.args()})
			w0, err := ring.ParseWait(wait)
			if err != nil {
				b.Fatal(err)
			}
			w, err := ring.NewSPSCWriter(ping, ring.Options{Wait: w0})
			if err != nil {
				b.Fatal(err)
			}
			var r *ring.SPSCReader
			for deadline := time.Now().Add(20 * time.Second); ; {
				if r, err = ring.NewSPSCReader(pong, ring.Options{Wait: w0}); err == nil {
					break
				}
				if time.Now().After(deadline) {
					b.Fatal(err)
				}
				time.Sleep(time.Millisecond)
			}
			defer r.Close()
			ctx := context.Background()
			msg := make([]byte, 8)
			buf := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if err := w.Write(ctx, 1, msg); err != nil {
					b.Fatal(err)
				}
				if _, _, err := r.Read(ctx, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/2, "ns/one-way")
			w.Close()
			_ = child.Wait(time.Minute)
		})
	}
}

// runIdleReader waits on an empty ring until it is closed.
func runIdleReader(c *proctest.Child) error {
	_, opts, seg, err := parseConfig(c)
	if err != nil {
		return err
	}
	r, err := ring.NewSPSCReader(seg, opts)
	if err != nil {
		return err
	}
	c.Point("ready")
	_, err = r.Next(context.Background())
	if errors.Is(err, ring.ErrEndOfStream) {
		return nil
	}
	return err
}

// BenchmarkIdleReaderCPU: the CPU an idle reader burns per wait strategy, as a percentage
// of one core: the on-CPU time of all the child's threads (/proc/PID/task/*/schedstat,
// nanoseconds) while it waited, over the time it waited. Run it with -benchtime 3s or more.
func threadsCPU(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		var ns int64
		if _, err := fmt.Sscan(string(b), &ns); err != nil {
			return 0, err
		}
		total += time.Duration(ns)
	}
	return total, nil
}

func BenchmarkIdleReaderCPU(b *testing.B) {
	for _, wait := range []string{"futex", "adaptive", "sleep:10ms", "sleep:1ms", "spin"} {
		b.Run(wait, func(b *testing.B) {
			dir := testDir(b)
			seg := newSegment(b, dir, "x", ring.Spec{Kind: ring.SPSC, Size: 4096})
			cfg := procConfig{Dir: dir, Name: "x", Wait: wait}
			child := proctest.Start(b, "idle-reader", proctest.Options{Args: cfg.args()})
			child.WaitPoint("ready", 20*time.Second)
			time.Sleep(50 * time.Millisecond) // past start-up and the spin phase
			cpu0, err := threadsCPU(child.Pid())
			if err != nil {
				b.Skip("no /proc schedstat:", err)
			}
			start := time.Now()
			for b.Loop() {
				time.Sleep(100 * time.Millisecond)
			}
			cpu1, err := threadsCPU(child.Pid())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(100*(cpu1-cpu0).Seconds()/time.Since(start).Seconds(), "cpu%")
			w, err := ring.NewSPSCWriter(seg, ring.Options{})
			if err != nil {
				b.Fatal(err)
			}
			w.Close()
			if err := child.Wait(time.Minute); err != nil {
				b.Fatal(err)
			}
		})
	}
}
