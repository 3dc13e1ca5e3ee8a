package bus

import (
	"errors"
	"fmt"
	"sync"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// State is a bus's health: Healthy, Degraded or Unhealthy.
type State string

// The health states, best first.
const (
	Healthy   State = "healthy"
	Degraded  State = "degraded"
	Unhealthy State = "unhealthy"
)

func worse(a, b State) State {
	rank := map[State]int{Healthy: 0, Degraded: 1, Unhealthy: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// Reason is one finding of a health check.
type Reason struct {
	State        State  `json:"state"`
	Check        string `json:"check"` // queue_near_full, queue_full, no_worker, dead_letters, error_rate, slow_handlers
	Subscription string `json:"subscription,omitempty"`
	Detail       string `json:"detail"`
}

// QueueHealth is a Reliable subscription's queue as health saw it.
type QueueHealth struct {
	Subscription string  `json:"subscription"`
	Depth        uint64  `json:"depth"`       // events waiting or in a handler, all lanes
	Capacity     uint64  `json:"capacity"`    // events, all lanes
	Bytes        int64   `json:"bytes"`       // envelope bytes queued (the byte bound's count)
	Utilisation  float64 `json:"utilisation"` // fullest lane (used / slots), or bytes / QueueBytes if more
	Workers      int     `json:"workers"`     // workers of live processes
}

// Health is the result of a health check.
type Health struct {
	Bus         string        `json:"bus"`
	State       State         `json:"state"`
	Reasons     []Reason      `json:"reasons"`
	Queues      []QueueHealth `json:"queues"`
	DeadLetters uint64        `json:"dead_letters"`
	Metrics     *Metrics      `json:"metrics,omitempty"` // what the metrics check read
}

func (h *Health) add(s State, check, sub, format string, args ...any) {
	h.State = worse(h.State, s)
	h.Reasons = append(h.Reasons, Reason{State: s, Check: check, Subscription: sub, Detail: fmt.Sprintf(format, args...)})
}

// Thresholds are what a health check compares with. Zero fields mean the defaults.
type Thresholds struct {
	// NearFull is the queue utilisation (0 to 1) reported as nearly full (Config.NearFull;
	// 0: DefaultNearFull).
	NearFull float64
	// MaxErrorRate is the fraction of failed handler calls above which a subscription is
	// degraded (Config.MaxErrorRate; 0: DefaultMaxErrorRate).
	MaxErrorRate float64
	// QueueBytes is the byte bound of each Reliable queue (Config.QueueBytes), 0 if none.
	QueueBytes int64
	// Previous is the metrics of an earlier check (Health.Metrics): the error rate, the
	// slow handlers and the dead letters' growth are reported for the time since. Nil: the
	// error rate is over the bus's lifetime, and slow handlers and growth are not reported.
	Previous *Metrics
	// LastDeadLetters is the dead-letter count of the previous check; growth since then is
	// reported. Negative: not known.
	LastDeadLetters int64
}

// Inspect checks the health of the bus name in opts.Dir from its segments alone, without
// changing anything (shm.Inspect), as `shmctl health` does: each Reliable queue's fill
// (queue_near_full from th.NearFull, queue_full, also of th.QueueBytes), whether it has a
// live worker (no_worker: unhealthy if events wait, degraded otherwise), the dead-letter
// queue (dead_letters, degraded), and from the shared metrics, for every subscription
// since th.Previous: the error rate (error_rate, degraded above th.MaxErrorRate) and
// handlers slower than Config.SlowHandler (slow_handlers, degraded). Errors: shm's
// (shm.ErrNotExist when there is no such bus), metrics'.
func Inspect(name string, opts shm.Options, th Thresholds) (Health, error) {
	h := Health{Bus: name, State: Healthy, Reasons: []Reason{}, Queues: []QueueHealth{}}
	if th.NearFull <= 0 {
		th.NearFull = DefaultNearFull
	}
	if th.MaxErrorRate <= 0 {
		th.MaxErrorRate = DefaultMaxErrorRate
	}
	entries, err := readEntries(name, opts)
	if err != nil {
		return h, err
	}
	m, err := ReadMetrics(name, opts)
	if err != nil {
		return h, err
	}
	h.Metrics = &m
	for _, e := range entries {
		q := QueueHealth{Subscription: e.name}
		for p := range envelope.Priorities {
			qs, err := shm.Inspect(queueName(name, e.name, envelope.Priority(p)), opts)
			if err != nil {
				h.add(Unhealthy, "queue_missing", e.name, "%v lane: %v", envelope.Priority(p), err)
				continue
			}
			st, err := ring.ReadStats(qs)
			qs.Close()
			if err != nil {
				h.add(Unhealthy, "queue_unreadable", e.name, "%v lane: %v", envelope.Priority(p), err)
				continue
			}
			q.Depth += st.Used
			q.Capacity += st.Capacity
			if p == int(envelope.Critical) {
				q.Workers = st.ReadersOpen
			}
			if st.Capacity > 0 {
				q.Utilisation = max(q.Utilisation, float64(st.Used)/float64(st.Capacity))
			}
		}
		if sm, ok := m.Find(e.name, ""); ok {
			q.Bytes = max(sm.QueueBytes, 0)
			if th.QueueBytes > 0 {
				q.Utilisation = max(q.Utilisation, float64(q.Bytes)/float64(th.QueueBytes))
			}
		}
		h.Queues = append(h.Queues, q)
		switch {
		case q.Utilisation >= 1:
			h.add(Unhealthy, "queue_full", e.name, "full: publishers get ErrQueueFull or wait")
		case q.Utilisation >= th.NearFull:
			h.add(Degraded, "queue_near_full", e.name, "%.0f%% full (threshold %.0f%%)", 100*q.Utilisation, 100*th.NearFull)
		}
		switch {
		case q.Workers == 0 && q.Depth > 0:
			h.add(Unhealthy, "no_worker", e.name, "%d events wait and no live process has a worker (subscriber process dead?)", q.Depth)
		case q.Workers == 0:
			h.add(Degraded, "no_worker", e.name, "no live process has a worker")
		}
	}
	for _, s := range m.Subscriptions {
		label := s.Subscription
		if label == "" {
			label = s.Mode
		}
		var prev SubscriptionMetrics
		if th.Previous != nil {
			if p, ok := th.Previous.Find(s.Subscription, s.Mode); ok {
				prev = *p
			}
		}
		calls := s.Delivered + s.Failed - prev.Delivered - prev.Failed
		if failed := s.Failed - prev.Failed; calls > 0 && float64(failed)/float64(calls) > th.MaxErrorRate {
			h.add(Degraded, "error_rate", label, "%d of %d handler calls failed (threshold %.0f%%)", failed, calls, 100*th.MaxErrorRate)
		}
		if slow := s.Slow - prev.Slow; th.Previous != nil && slow > 0 {
			h.add(Degraded, "slow_handlers", label, "%d handler calls over the slow threshold", slow)
		}
	}
	n, capacity, err := countDeadLetters(name, opts)
	if err != nil && !errors.Is(err, shm.ErrNotExist) {
		h.add(Unhealthy, "dead_letters_unreadable", "", "%v", err)
	}
	h.DeadLetters = uint64(n)
	if n > 0 && n >= capacity {
		h.add(Unhealthy, "dead_letters_full", "", "the dead-letter queue is full (%d): workers hold their failed events until there is room", capacity)
	}
	if h.DeadLetters > 0 {
		detail := fmt.Sprintf("%d events in the dead-letter queue", h.DeadLetters)
		if th.LastDeadLetters >= 0 && int64(h.DeadLetters) > th.LastDeadLetters {
			detail += fmt.Sprintf(", %d since the last check", int64(h.DeadLetters)-th.LastDeadLetters)
		}
		h.add(Degraded, "dead_letters", "", "%s", detail)
	}
	return h, nil
}

// healthState is what Bus.Health remembers between calls.
type healthState struct {
	mu          sync.Mutex
	deadLetters int64
	last        *Metrics
}

// Health checks the bus as Inspect does, with this bus's Config thresholds, the error rate
// and slow handlers counted since the previous Health call of this Bus (the bus's lifetime
// on the first call; every process's deliveries). Safe for concurrent use.
func (b *Bus) Health() (Health, error) {
	b.health.mu.Lock()
	defer b.health.mu.Unlock()
	if b.health.last == nil {
		b.health.deadLetters = -1
	}
	h, err := Inspect(b.name, b.opts, Thresholds{NearFull: b.cfg.NearFull, MaxErrorRate: b.cfg.MaxErrorRate,
		Previous: b.health.last, LastDeadLetters: b.health.deadLetters})
	if err != nil {
		return h, err
	}
	b.health.deadLetters = int64(h.DeadLetters)
	b.health.last = h.Metrics
	return h, nil
}
