package bus

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// latencyRecorder keeps publish → handler latencies in an HDR histogram (1 µs to 1 min,
// 3 significant digits). Safe for concurrent use.
type latencyRecorder struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func (r *latencyRecorder) record(nanos int64) {
	if nanos < 0 {
		nanos = 0 // clocks of two processes: wall time may step
	}
	r.mu.Lock()
	if r.h == nil {
		r.h = hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
	}
	_ = r.h.RecordValue(max(nanos/1000, 1))
	r.mu.Unlock()
}

func (r *latencyRecorder) percentiles() (p50, p95, p99 time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.h == nil {
		return 0, 0, 0
	}
	us := func(q float64) time.Duration { return time.Duration(r.h.ValueAtQuantile(q)) * time.Microsecond }
	return us(50), us(95), us(99)
}
