package ring_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmq/shmq/ring"
)

// The hot paths, timed by the thread's CPU clock as well as the wall clock (cpu-ns/op):
// on a shared machine the wall clock counts the time other processes hold the CPU, the
// thread's CPU clock does not. For comparing two builds of the SIGBUS defence (issue 11).

func threadCPUTime() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// cpuLoop runs op b.N times (b.Loop) on a locked thread and reports its CPU time per op.
func cpuLoop(b *testing.B, op func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	t0 := threadCPUTime()
	for b.Loop() {
		op()
	}
	b.ReportMetric(float64((threadCPUTime()-t0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// BenchmarkHotSPSC64: TryReserve, Commit, TryNext, Release of a 64-byte message
// (BenchmarkSPSCInProcess/64B).
func BenchmarkHotSPSC64(b *testing.B) {
	_, w, r := newSPSC(b, 1<<20, ring.Options{})
	msg := make([]byte, 64)
	cpuLoop(b, func() {
		p, err := w.TryReserve(1, 64)
		if err != nil {
			b.Fatal(err)
		}
		copy(p, msg)
		w.Commit()
		rec, err := r.TryNext()
		if err != nil || len(rec.Data) != 64 {
			b.Fatal(err)
		}
		r.Release()
	})
}

// BenchmarkHotSPSCBatch32: ReserveBatch of 32, Commit, Drain (BenchmarkInProcessBatch/spsc);
// the op is the batch of 32.
func BenchmarkHotSPSCBatch32(b *testing.B) {
	_, w, r := newSPSC(b, 1<<20, ring.Options{})
	msg := make([]byte, 64)
	ctx := context.Background()
	sink := 0
	fn := func(rec ring.Record) error { sink += len(rec.Data); return nil }
	var recs [][]byte
	var err error
	cpuLoop(b, func() {
		if recs, err = w.ReserveBatch(ctx, 1, 64, 32, recs[:0]); err != nil || len(recs) != 32 {
			b.Fatal(len(recs), err)
		}
		for _, p := range recs {
			copy(p, msg)
		}
		w.Commit()
		if got, err := r.Drain(ctx, fn, 0); err != nil || got != 32 {
			b.Fatal(got, err)
		}
	})
}

// BenchmarkHotSPSCRead64: TryWrite, then the copying Read (a blocking call that did not
// need to wait).
func BenchmarkHotSPSCRead64(b *testing.B) {
	_, w, r := newSPSC(b, 1<<20, ring.Options{})
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	ctx := context.Background()
	cpuLoop(b, func() {
		if err := w.TryWrite(1, msg); err != nil {
			b.Fatal(err)
		}
		if n, _, err := r.Read(ctx, buf); err != nil || n != 64 {
			b.Fatal(n, err)
		}
	})
}

// BenchmarkHotSPSCDrainOne64: TryWrite, then a Drain that takes that one record (the worst
// case for Drain's once-per-call cost).
func BenchmarkHotSPSCDrainOne64(b *testing.B) {
	_, w, r := newSPSC(b, 1<<20, ring.Options{})
	msg := make([]byte, 64)
	ctx := context.Background()
	sink := 0
	fn := func(rec ring.Record) error { sink += len(rec.Data); return nil }
	cpuLoop(b, func() {
		if err := w.TryWrite(1, msg); err != nil {
			b.Fatal(err)
		}
		if n, err := r.Drain(ctx, fn, 0); err != nil || n != 1 {
			b.Fatal(n, err)
		}
	})
}

// BenchmarkHotSPSCReserveNext64: the blocking forms on their fast path: Reserve, Commit,
// Next, Release.
func BenchmarkHotSPSCReserveNext64(b *testing.B) {
	_, w, r := newSPSC(b, 1<<20, ring.Options{})
	msg := make([]byte, 64)
	ctx := context.Background()
	cpuLoop(b, func() {
		p, err := w.Reserve(ctx, 1, 64)
		if err != nil {
			b.Fatal(err)
		}
		copy(p, msg)
		w.Commit()
		rec, err := r.Next(ctx)
		if err != nil || len(rec.Data) != 64 {
			b.Fatal(err)
		}
		r.Release()
	})
}

// BenchmarkHotMPMC64: TryWrite, TryNext, Release (BenchmarkMPMCInProcess/64B).
func BenchmarkHotMPMC64(b *testing.B) {
	seg := newMPMCSeg(b, uint64(1<<20)/128, 128)
	w, _ := ring.NewMPMCWriter(seg, ring.Options{})
	r, _ := ring.NewMPMCReader(seg, ring.Options{})
	defer w.Close()
	defer r.Close()
	msg := make([]byte, 64)
	cpuLoop(b, func() {
		if err := w.TryWrite(1, msg); err != nil {
			b.Fatal(err)
		}
		rec, err := r.TryNext()
		if err != nil || len(rec.Data) != 64 {
			b.Fatal(err)
		}
		r.Release()
	})
}
