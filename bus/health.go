package bus

import (
	"fmt"
	"sort"
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
	Utilisation  float64 `json:"utilisation"` // fullest lane: used / slots
	Workers      int     `json:"workers"`     // reader endpoints of live processes (3 per worker)
}

// Health is the result of a health check.
type Health struct {
	Bus         string        `json:"bus"`
	State       State         `json:"state"`
	Reasons     []Reason      `json:"reasons"`
	Queues      []QueueHealth `json:"queues"`
	DeadLetters uint64        `json:"dead_letters"`
}

func (h *Health) add(s State, check, sub, format string, args ...any) {
	h.State = worse(h.State, s)
	h.Reasons = append(h.Reasons, Reason{State: s, Check: check, Subscription: sub, Detail: fmt.Sprintf(format, args...)})
}

// Thresholds are what a health check compares with (Config's NearFull, MaxErrorRate).
type Thresholds struct {
	NearFull float64
	// LastDeadLetters is the dead-letter count of the previous check; growth since then is
	// reported. Negative: not known.
	LastDeadLetters int64
}

// Inspect checks the health of the bus name in opts.Dir from its segments alone, without
// changing anything (shm.Inspect), as `shmctl health` does: each Reliable queue's fill
// (queue_near_full from th.NearFull, queue_full), whether it has a live worker (no_worker:
// unhealthy if events wait, degraded otherwise), and the dead-letter queue
// (dead_letters, degraded). Errors: shm's (shm.ErrNotExist when there is no such bus).
func Inspect(name string, opts shm.Options, th Thresholds) (Health, error) {
	h := Health{Bus: name, State: Healthy, Reasons: []Reason{}, Queues: []QueueHealth{}}
	seg, err := shm.Inspect(registryName(name), opts)
	if err != nil {
		return h, err
	}
	defer seg.Close()
	if seg.Descriptor().Kind != Kind {
		return h, fmt.Errorf("%w: %s is a %v segment", shm.ErrKind, seg.Name(), seg.Descriptor().Kind)
	}
	if len(seg.Data()) < regDataSize {
		return h, fmt.Errorf("%w: registry of %d bytes", ErrCorrupt, len(seg.Data()))
	}
	entries, _ := (&registry{seg: seg}).readOnly()
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
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
			q.Workers += st.ReadersOpen
			if st.Capacity > 0 {
				q.Utilisation = max(q.Utilisation, float64(st.Used)/float64(st.Capacity))
			}
		}
		h.Queues = append(h.Queues, q)
		switch {
		case q.Utilisation >= 1:
			h.add(Unhealthy, "queue_full", e.name, "a lane is full: publishers get ErrQueueFull or wait")
		case q.Utilisation >= th.NearFull:
			h.add(Degraded, "queue_near_full", e.name, "fullest lane %.0f%% used (threshold %.0f%%)", 100*q.Utilisation, 100*th.NearFull)
		}
		switch {
		case q.Workers == 0 && q.Depth > 0:
			h.add(Unhealthy, "no_worker", e.name, "%d events wait and no live process has a worker (subscriber process dead?)", q.Depth)
		case q.Workers == 0:
			h.add(Degraded, "no_worker", e.name, "no live process has a worker")
		}
	}
	if ds, err := shm.Inspect(dlqName(name), opts); err == nil {
		if st, err := ring.ReadStats(ds); err == nil {
			h.DeadLetters = st.Used
		}
		ds.Close()
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
	last        map[*Subscription]Stats
}

// Health checks the bus: everything Inspect checks, plus, for this process's subscriptions
// since the previous Health call, the error rate (error_rate: degraded above
// Config.MaxErrorRate) and handlers slower than Config.SlowHandler (slow_handlers,
// degraded). Safe for concurrent use.
func (b *Bus) Health() (Health, error) {
	b.health.mu.Lock()
	defer b.health.mu.Unlock()
	if b.health.last == nil {
		b.health.last = map[*Subscription]Stats{}
		b.health.deadLetters = -1
	}
	h, err := Inspect(b.name, b.opts, Thresholds{NearFull: b.cfg.NearFull, LastDeadLetters: b.health.deadLetters})
	if err != nil {
		return h, err
	}
	b.health.deadLetters = int64(h.DeadLetters)
	b.subsMu.Lock()
	subs := make([]*Subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.subsMu.Unlock()
	for _, s := range subs {
		st, prev := s.Stats(), b.health.last[s]
		b.health.last[s] = st
		label := s.name
		if label == "" {
			label = st.Mode + " " + s.typeName
		}
		calls := st.Delivered + st.Failed - prev.Delivered - prev.Failed
		if failed := st.Failed - prev.Failed; calls > 0 && float64(failed)/float64(calls) > b.cfg.MaxErrorRate {
			h.add(Degraded, "error_rate", label, "%d of %d deliveries failed (threshold %.0f%%)", failed, calls, 100*b.cfg.MaxErrorRate)
		}
		if slow := st.Slow - prev.Slow; slow > 0 {
			h.add(Degraded, "slow_handlers", label, "%d handler calls over %v", slow, b.cfg.SlowHandler)
		}
	}
	return h, nil
}
