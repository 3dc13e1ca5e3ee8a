package metrics

import (
	"math"
	"runtime"
	"sync/atomic"
)

// The recording handles. Each is a pointer into this process's mapping of the set, looked
// up once (Set.Counter and friends); recording is one atomic add or store on shared memory,
// with no lock, no map lookup and no allocation, from any goroutine of any process.
//
// Every word is written only with sync/atomic read-modify-writes and stores, so concurrent
// recorders in several processes never lose an update; a reader's atomic load of a word
// sees every update that happens before it. No order is kept between different words: a
// snapshot taken while others record may show one series' update and not another's.
//
// A handle stays safe to use after its Set is closed: what it records still lands in the
// set's memory, which stays mapped until the Set and every handle are unreachable (see
// region). A nil handle ignores what it is given and loads 0, so code can record into
// metrics that were not set up.

// Counter is a series of TypeCounter: a uint64 that grows by Add, wrapping modulo 2^64.
type Counter struct {
	v *uint64
	// r keeps the mapping alive while the handle is reachable: every method ends with
	// runtime.KeepAlive(r), so that a handle dropped during a call (the last use of the
	// receiver being the load of v) cannot have its mapping unmapped under the call.
	r *region
}

// Add adds n. Safe for concurrent use from any goroutine and process.
func (c *Counter) Add(n uint64) {
	if c == nil {
		return
	}
	atomic.AddUint64(c.v, n)
	runtime.KeepAlive(c.r) // the mapping must outlive the add; see region
}

// Inc adds 1.
func (c *Counter) Inc() { c.Add(1) }

// Load returns the current value: the sum of every Add that happened before it, in any
// process, modulo 2^64.
func (c *Counter) Load() uint64 {
	if c == nil {
		return 0
	}
	v := atomic.LoadUint64(c.v)
	runtime.KeepAlive(c.r)
	return v
}

// Gauge is a series of TypeGauge: an int64 that is set or moved either way (a queue's
// depth, say). Safe for concurrent use from any goroutine and process.
type Gauge struct {
	v *int64
	r *region
}

// Set stores v.
func (g *Gauge) Set(v int64) {
	if g == nil {
		return
	}
	atomic.StoreInt64(g.v, v)
	runtime.KeepAlive(g.r)
}

// Add adds d (which may be negative), wrapping as int64 arithmetic does, and returns the new
// value.
func (g *Gauge) Add(d int64) int64 {
	if g == nil {
		return 0
	}
	v := atomic.AddInt64(g.v, d)
	runtime.KeepAlive(g.r)
	return v
}

// Load returns the current value.
func (g *Gauge) Load() int64 {
	if g == nil {
		return 0
	}
	v := atomic.LoadInt64(g.v)
	runtime.KeepAlive(g.r)
	return v
}

// Histogram is a series of TypeHistogram: bucket counts in HdrHistogram's layout, which
// Snapshot turns into an hdrhistogram.Histogram for percentiles. Recording a value is one
// atomic add on the count of its bucket. Safe for concurrent use from any goroutine and
// process.
type Histogram struct {
	counts []int64   // the counts array, in this process's mapping
	oor    *uint64   // values refused
	g      *geometry // immutable after open
	r      *region
}

// Record counts one occurrence of v. A value the histogram cannot hold (negative, or
// beyond its highest bucket, which ends at or above Desc.Highest) is not recorded: it is
// counted in the histogram's OutOfRange and Record returns ErrOutOfRange. Either way
// nothing is allocated.
func (h *Histogram) Record(v int64) error { return h.RecordN(v, 1) }

// RecordN counts n occurrences of v, as Record does one (refused, they add n to
// OutOfRange); an n of 2^63 or more is refused as out of range, as a bucket could not
// count it.
func (h *Histogram) RecordN(v int64, n uint64) error {
	if h == nil {
		return nil
	}
	if v >= 0 && n <= math.MaxInt64 {
		if i := h.g.index(v); uint(i) < uint(len(h.counts)) {
			atomic.AddInt64(&h.counts[i], int64(n))
			runtime.KeepAlive(h.r)
			return nil
		}
	}
	atomic.AddUint64(h.oor, n)
	runtime.KeepAlive(h.r)
	return ErrOutOfRange
}
