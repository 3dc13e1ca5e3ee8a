package bus

import (
	"context"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
)

// ShutdownReport says what Shutdown left.
type ShutdownReport struct {
	// Unfinished lists the subscriptions whose workers were still in a handler at the
	// deadline (their handlers' ctx was then cancelled).
	Unfinished []string `json:"unfinished"`
	// Queued is, per Reliable subscription of this process, the events left in its queue
	// for the next worker (they are not lost).
	Queued map[string]uint64 `json:"queued"`
}

// Shutdown stops the bus gracefully: Publish and Subscribe fail with ErrShuttingDown from
// now on; each subscription finishes the event in hand (retries included) and stops,
// waiting until ctx ends or Config.ShutdownTimeout passes, whichever is first; then every
// segment is closed. The report says which subscriptions were cut short and what their
// queues still hold. Safe to call any number of times, and with Close.
func (b *Bus) Shutdown(ctx context.Context) (ShutdownReport, error) {
	b.closing.Store(true)
	rep := ShutdownReport{Queued: map[string]uint64{}}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.ShutdownTimeout)
	defer cancel()
	b.subsMu.Lock()
	subs := make([]*Subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.subsMu.Unlock()
	for _, s := range subs {
		if !s.drain(ctx) {
			label := s.name
			if label == "" {
				label = s.cfg.mode.mode() + " " + s.typeName
			}
			rep.Unfinished = append(rep.Unfinished, label)
		}
		if s.name != "" {
			rep.Queued[s.name] = s.depthAfter()
		}
	}
	b.closed.Do(b.release)
	return rep, nil
}

// Close stops every subscription of this process at once (handlers' ctx cancelled, then
// waited for) and closes the bus's segments. Publish and Subscribe then fail with
// ErrShuttingDown. Events left in Reliable queues stay there for other workers. Safe to
// call any number of times, from any goroutine.
func (b *Bus) Close() error {
	b.closing.Store(true)
	b.subsMu.Lock()
	subs := make([]*Subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.subsMu.Unlock()
	for _, s := range subs {
		s.Close()
	}
	b.closed.Do(b.release)
	return nil
}

// depth is the number of events waiting in the subscription's queue, all lanes.
func (s *Subscription) depth() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queue == nil {
		return 0
	}
	var n uint64
	for p := range envelope.Priorities {
		if st, err := ring.ReadStats(s.queue.segs[p]); err == nil {
			n += st.Used
		}
	}
	return n
}

// depthAfter is depth for a subscription already closed: it opens the queue to look.
func (s *Subscription) depthAfter() uint64 {
	q, err := s.b.openQueue(subEntry{name: s.name}, false)
	if err != nil {
		return 0
	}
	defer q.close()
	var n uint64
	for p := range envelope.Priorities {
		if st, err := ring.ReadStats(q.segs[p]); err == nil {
			n += st.Used
		}
	}
	return n
}
