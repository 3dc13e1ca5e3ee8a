package bridge

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/topic"
)

// inBestEffort writes a core NATS subject into a local topic without waiting: a message the
// topic has no room for is dropped.
func (b *Bridge) inBestEffort(ctx context.Context, nc *nats.Conn, r Route, c *counters) error {
	t, err := b.openTopic(r, true)
	if err != nil {
		return err
	}
	defer t.Close()
	pub, err := t.Publisher(ring.Options{Wait: b.cfg.Wait})
	if err != nil {
		return fmt.Errorf("bridge: publisher %s: %w", r.Topic, err)
	}
	defer pub.Close()
	var ids envelope.IDs
	// The subscription's handler runs on one goroutine at a time, as a Publisher needs.
	s, err := nc.Subscribe(r.Subject, func(m *nats.Msg) {
		if err := b.writeLocal(nil, pub, m, &ids, nil, c); err != nil {
			c.dropped.Add(1)
		}
	})
	if err != nil {
		return fmt.Errorf("bridge: subscribe %s: %w", r.Subject, err)
	}
	<-ctx.Done()
	return s.Unsubscribe()
}

// errLooped and errDuplicate say why writeLocal wrote nothing.
var (
	errLooped    = errors.New("bridge: message sent by this bridge")
	errDuplicate = errors.New("bridge: message already in the topic")
)

// writeLocal writes a NATS message into the local topic as an envelope. With ctx nil it
// never waits (ring.ErrFull when there is no room). seen, when not nil, holds the ids
// already written: a message among them is counted as a duplicate, not written.
func (b *Bridge) writeLocal(ctx context.Context, pub *ring.Publisher, m *nats.Msg, ids *envelope.IDs, seen *seenIDs, c *counters) error {
	if v := m.Header[hdrOrigin]; len(v) > 0 && v[0] == b.cfg.Name {
		c.looped.Add(1)
		return nil
	}
	h, err := fromNATS(m, ids)
	if err != nil {
		return err
	}
	if seen != nil && seen.has(h.ID) {
		c.duplicates.Add(1)
		return nil
	}
	n, err := h.Size(len(m.Data))
	if err != nil {
		return err
	}
	var dst []byte
	if ctx == nil {
		dst, err = pub.TryReserve(envelope.TypeID(h.Type), n)
	} else {
		dst, err = pub.Reserve(ctx, envelope.TypeID(h.Type), n)
	}
	if err != nil {
		return err
	}
	p, err := h.Put(dst, len(m.Data))
	if err != nil {
		pub.Abort()
		return err
	}
	copy(p, m.Data)
	if err := pub.Commit(); err != nil {
		return err
	}
	if seen != nil {
		seen.add(h.ID)
	}
	c.received.Add(1)
	return nil
}

// inReliable pulls a subject from the bridge's durable JetStream consumer into a local topic,
// acknowledging each message once it is in the topic.
func (b *Bridge) inReliable(ctx context.Context, js jetstream.JetStream, r Route, c *counters) error {
	t, err := b.openTopic(r, true)
	if err != nil {
		return err
	}
	defer t.Close()
	seen := newSeenIDs(b.cfg.Seen)
	if err := b.loadSeen(ctx, t, seen); err != nil {
		return err
	}
	pub, err := t.Publisher(ring.Options{Wait: b.cfg.Wait})
	if err != nil {
		return fmt.Errorf("bridge: publisher %s: %w", r.Topic, err)
	}
	defer pub.Close()
	stopPub := context.AfterFunc(ctx, func() { pub.Close() })
	defer stopPub()
	if err := b.ensureStream(ctx, js); err != nil {
		return err
	}
	var ids envelope.IDs
	for ctx.Err() == nil {
		err := b.consume(ctx, js, r, pub, &ids, seen, c)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errRetry) {
			return err
		}
		c.retried.Add(1)
		pause(ctx, b.cfg.RetryWait)
	}
	return nil
}

// consume runs one pull subscription of the route's durable consumer into the topic.
func (b *Bridge) consume(ctx context.Context, js jetstream.JetStream, r Route, pub *ring.Publisher, ids *envelope.IDs, seen *seenIDs, c *counters) error {
	return b.pull(ctx, js, b.durableName(r.Topic), r.Subject, func(m *nats.Msg) error {
		return b.writeLocal(ctx, pub, m, ids, seen, c)
	}, c)
}

// pull runs one pull subscription of the durable consumer named durable on subject until it
// fails (errRetry) or ctx ends, handing each message to write and acknowledging it once
// write returned nil. A message write refuses is terminated (it would come back forever)
// and counted as dropped.
func (b *Bridge) pull(ctx context.Context, js jetstream.JetStream, durable, subject string, write func(*nats.Msg) error, c *counters) error {
	cctx, cancel := context.WithTimeout(ctx, b.cfg.AckTimeout)
	cons, err := js.CreateOrUpdateConsumer(cctx, b.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: b.cfg.Window,
		AckWait:       b.cfg.AckWait,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("%w: consumer: %w", errRetry, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(b.cfg.Window))
	if err != nil {
		return fmt.Errorf("%w: pull: %w", errRetry, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: next: %w", errRetry, err)
		}
		m := &nats.Msg{Subject: msg.Subject(), Header: nats.Header(msg.Headers()), Data: msg.Data()}
		if err := write(m); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.dropped.Add(1)
			_ = msg.Term()
			continue
		}
		if testAfterLocalWrite != nil {
			testAfterLocalWrite()
		}
		_ = msg.Ack() // a lost ack redelivers the message, and seen drops it
	}
}

// loadSeen reads the ids of the messages earlier runs wrote from NATS into t, from the
// topic's history, so that what JetStream delivers again after a kill is not written twice.
func (b *Bridge) loadSeen(ctx context.Context, t *topic.Topic, seen *seenIDs) error {
	sub, err := t.Subscribe(ctx, ring.SubscribeOptions{Start: ring.FromOldest})
	if err != nil {
		return fmt.Errorf("bridge: read history of %s: %w", t.Name(), err)
	}
	defer sub.Close()
	for {
		rec, err := sub.TryNext()
		if errors.Is(err, ring.ErrEmpty) {
			return nil
		}
		if errors.Is(err, ring.ErrLagged) {
			continue
		}
		if err != nil {
			return fmt.Errorf("bridge: read history of %s: %w", t.Name(), err)
		}
		if v, err := envelope.Parse(rec.Data); err == nil {
			if _, ok := v.Meta(OriginKey); ok {
				seen.add(v.ID)
			}
		}
		sub.Release()
	}
}

// seenIDs remembers the last n ids added.
type seenIDs struct {
	set  map[uuid.UUID]struct{}
	ring []uuid.UUID
	next int
}

func newSeenIDs(n int) *seenIDs {
	return &seenIDs{set: make(map[uuid.UUID]struct{}, n), ring: make([]uuid.UUID, 0, n)}
}

func (s *seenIDs) has(id uuid.UUID) bool { _, ok := s.set[id]; return ok }

func (s *seenIDs) add(id uuid.UUID) {
	if s.has(id) {
		return
	}
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, id)
	} else {
		delete(s.set, s.ring[s.next])
		s.ring[s.next] = id
		s.next = (s.next + 1) % len(s.ring)
	}
	s.set[id] = struct{}{}
}
