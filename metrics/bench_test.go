package metrics_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/shm"
)

// Compare the handles with their in-process floors in one run:
//
//	go test -run '^$' -bench . -benchtime 1s ./metrics

func benchSet(b *testing.B) *metrics.Set {
	s, _ := benchSetIn(b)
	return s
}

func benchSetIn(b *testing.B) (*metrics.Set, string) {
	dir := testDir(b)
	s, err := metrics.Create("m", procSchema(), shm.Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, dir
}

func BenchmarkCounterAdd(b *testing.B) {
	c, _ := benchSet(b).Counter("events_total")
	b.ReportAllocs()
	for b.Loop() {
		c.Add(1)
	}
}

// BenchmarkHeapAtomicAdd is the floor of Counter.Add: an atomic add on Go memory.
func BenchmarkHeapAtomicAdd(b *testing.B) {
	var v atomic.Uint64
	b.ReportAllocs()
	for b.Loop() {
		v.Add(1)
	}
}

func BenchmarkCounterAddParallel(b *testing.B) {
	c, _ := benchSet(b).Counter("events_total")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Add(1)
		}
	})
}

func BenchmarkGaugeSet(b *testing.B) {
	g, _ := benchSet(b).Gauge("depth")
	b.ReportAllocs()
	i := int64(0)
	for b.Loop() {
		g.Set(i)
		i++
	}
}

// latencies are the values the histogram benchmarks record: a long-tailed spread.
var latencies = values(1, 1, 1<<16)

func BenchmarkHistogramRecord(b *testing.B) {
	h, _ := benchSet(b).Histogram("latency_ns")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = h.Record(latencies[i&(1<<16-1)])
		i++
	}
}

// BenchmarkLibraryRecordValue is the floor of Histogram.Record: hdrhistogram-go's own
// RecordValue in Go memory, with no atomic (it is not safe for concurrent use).
func BenchmarkLibraryRecordValue(b *testing.B) {
	h := hdrhistogram.New(1, 10e9, 3)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = h.RecordValue(latencies[i&(1<<16-1)])
		i++
	}
}

func BenchmarkHistogramRecordParallel(b *testing.B) {
	h, _ := benchSet(b).Histogram("latency_ns")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_ = h.Record(latencies[i&(1<<16-1)])
			i++
		}
	})
}

// BenchmarkLibraryRecordMutexParallel is what concurrent recording costs with the library
// in one process: a mutex around RecordValue.
func BenchmarkLibraryRecordMutexParallel(b *testing.B) {
	h := hdrhistogram.New(1, 10e9, 3)
	var mu sync.Mutex
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			mu.Lock()
			_ = h.RecordValue(latencies[i&(1<<16-1)])
			mu.Unlock()
			i++
		}
	})
}

func BenchmarkSnapshot(b *testing.B) {
	s := benchSet(b)
	h, _ := s.Histogram("latency_ns")
	for _, v := range latencies {
		_ = h.Record(v)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Snapshot(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCounterAddContended: Counter.Add while another process adds to the same counter
// as fast as it can: what sharing one series' cache line across processes costs.
func BenchmarkCounterAddContended(b *testing.B) {
	s, dir := benchSetIn(b)
	c, _ := s.Counter("events_total")
	p := proctest.Start(b, "hammer", proctest.Options{Args: []string{dir, s.Name()}})
	p.WaitPoint("hammering", time.Minute)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.Add(1)
	}
	b.StopTimer()
	p.Kill()
}

// runHammer adds to events_total of the set Args[1] in directory Args[0] until killed.
func runHammer(c *proctest.Child) error {
	s, err := metrics.Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	ctr, err := s.Counter("events_total")
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		ctr.Add(1)
		if i == 1000 {
			c.Point("hammering")
		}
	}
}
