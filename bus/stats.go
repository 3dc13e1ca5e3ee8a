package bus

import (
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/envelope"
)

// This process's own counters, beside the shared-memory series of metrics.go: Stats and
// BusStats say what happened here (a Reliable subscription's set sums every process).

// counters are a process's bus-wide totals.
type counters struct {
	published [envelope.Priorities]atomic.Uint64
	full      atomic.Uint64
}

// subCounters are one subscription's totals in this process.
type subCounters struct {
	delivered    atomic.Uint64
	failed       atomic.Uint64
	timeouts     atomic.Uint64
	retried      atomic.Uint64
	deadLettered atomic.Uint64
	dlqErrors    atomic.Uint64
	dropped      atomic.Uint64
	conflated    atomic.Uint64
	malformed    atomic.Uint64
	slow         atomic.Uint64
	handlerNanos atomic.Uint64
	abandoned    atomic.Uint64
	latency      latencyRecorder
}

// Stats are a subscription's counters in this process since Subscribe.
type Stats struct {
	Mode         string        `json:"mode"`
	Name         string        `json:"name,omitempty"`
	Delivered    uint64        `json:"delivered"`     // handler returned nil (in time)
	Failed       uint64        `json:"failed"`        // handler returned an error or timed out
	Timeouts     uint64        `json:"timeouts"`      // of Failed: ErrDeliveryTimeout
	Retried      uint64        `json:"retried"`       // attempts after a failure
	DeadLettered uint64        `json:"dead_lettered"` // events put in the dead-letter queue
	Dropped      uint64        `json:"dropped"`       // BestEffort, LatestOnly: events of any type a lapping publisher overwrote before we read them
	Conflated    uint64        `json:"conflated"`     // LatestOnly: events this subscription takes, replaced by a newer one of their type
	Malformed    uint64        `json:"malformed"`     // records that were not a valid envelope
	Slow         uint64        `json:"slow"`          // handler calls longer than Config.SlowHandler
	Abandoned    uint64        `json:"abandoned"`     // Reliable: workers given up in a handler that ignored its ctx
	Workers      int           `json:"workers"`       // worker goroutines
	Busy         int           `json:"busy"`          // of Workers: in a handler now
	Idle         int           `json:"idle"`          // of Workers: waiting for an event
	AvgHandler   time.Duration `json:"avg_handler"`   // mean handler duration
	LatencyP50   time.Duration `json:"latency_p50"`   // publish → handler start, this process's calls
	LatencyP95   time.Duration `json:"latency_p95"`
	LatencyP99   time.Duration `json:"latency_p99"`
}

// Stats returns the subscription's counters in this process (the shared-memory metrics,
// ReadMetrics, sum every process's).
func (s *Subscription) Stats() Stats {
	st := Stats{
		Mode: s.cfg.mode.mode(), Name: s.name,
		Delivered: s.stats.delivered.Load(), Failed: s.stats.failed.Load(), Timeouts: s.stats.timeouts.Load(),
		Retried: s.stats.retried.Load(), DeadLettered: s.stats.deadLettered.Load(), Dropped: s.stats.dropped.Load(),
		Conflated: s.stats.conflated.Load(), Malformed: s.stats.malformed.Load(), Slow: s.stats.slow.Load(), Abandoned: s.stats.abandoned.Load(),
	}
	s.mu.Lock()
	st.Workers = len(s.workers)
	for _, w := range s.workers {
		if w.started.Load() > 0 {
			st.Busy++
		}
	}
	s.mu.Unlock()
	st.Idle = st.Workers - st.Busy
	if calls := st.Delivered + st.Failed; calls > 0 {
		st.AvgHandler = time.Duration(s.stats.handlerNanos.Load() / calls)
	}
	st.LatencyP50, st.LatencyP95, st.LatencyP99 = s.stats.latency.percentiles()
	return st
}

// BusStats are a process's publishing totals.
type BusStats struct {
	Published [envelope.Priorities]uint64 `json:"published"`  // by priority
	QueueFull uint64                      `json:"queue_full"` // times a Reliable queue was found full
}

// Stats returns this process's publishing totals.
func (b *Bus) Stats() BusStats {
	var st BusStats
	for p := range st.Published {
		st.Published[p] = b.counters.published[p].Load()
	}
	st.QueueFull = b.counters.full.Load()
	return st
}
