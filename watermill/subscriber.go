package watermill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/shmq/shmq/ring"
)

// Subscriber subscribes to shmq topics for Watermill. Every Subscribe call is a
// subscription of its own: without a consumer group it receives every message of the topic
// from the oldest one the topic holds (or the next one, with FromLatest); with one it
// receives its share of the group's messages (see SubscriberConfig.ConsumerGroup and the
// package doc).
//
// Subscribe and Close may be called from any goroutine; Close any number of times.
type Subscriber struct {
	cfg    SubscriberConfig
	r      resolved
	logger watermill.LoggerAdapter

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu     sync.Mutex // guards closed and Add on subs
	closed bool
	subs   sync.WaitGroup // subscriptions running

	delivered, redelivered, rejected, lost atomic.Uint64
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// NewSubscriber returns a Subscriber. ErrInvalidConfig for a configuration it cannot use;
// a nil logger discards.
func NewSubscriber(cfg SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	r, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Subscriber{cfg: cfg, r: r, logger: orNop(logger), ctx: ctx, cancel: cancel}, nil
}

// Stats counts what the Subscriber's subscriptions did.
type Stats struct {
	Delivered   uint64 // messages handed out for the first time
	Redelivered uint64 // messages handed out again after a Nack
	Rejected    uint64 // records passed over: not an envelope of the topic (ErrForeign)
	Lost        uint64 // messages a subscription missed: overwritten under ring.Overwrite, or a consumer group away longer than the topic's history
}

// Stats returns the counts so far.
func (s *Subscriber) Stats() Stats {
	return Stats{Delivered: s.delivered.Load(), Redelivered: s.redelivered.Load(),
		Rejected: s.rejected.Load(), Lost: s.lost.Load()}
}

// begin registers a subscription; false after Close.
func (s *Subscriber) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.subs.Add(1)
	return true
}

func (s *Subscriber) start() ring.Start {
	if s.cfg.FromLatest {
		return ring.FromLatest
	}
	return ring.FromOldest
}

// Subscribe subscribes to topic and returns the channel of its messages, which is closed
// when ctx ends or the Subscriber closes. The topic is created (with Config.Topic) if it
// does not exist. Each message is handed out after the previous one was acked (InFlight
// 1) and again after a Nack; its Context ends when it is acked or nacked, or the
// subscription ends. Errors: ErrClosed, the topic's (shm.ErrInvalidName and the like),
// ring.ErrSubscriptionsFull when the topic has 64 subscriptions already.
func (s *Subscriber) Subscribe(ctx context.Context, topicName string) (<-chan *message.Message, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if !s.begin() {
		return nil, ErrClosed
	}
	sub, err := s.subscribe(ctx, topicName)
	if err != nil {
		s.subs.Done()
		return nil, err
	}
	return sub.out, nil
}

// subscription is one Subscribe call.
type subscription struct {
	s      *Subscriber
	topic  string
	ctx    context.Context // ends with the Subscribe ctx and at Close
	cancel context.CancelFunc
	out    chan *message.Message
	seg    *sharedSeg // the topic
}

func (s *Subscriber) subscribe(ctx context.Context, topicName string) (*subscription, error) {
	seg, err := acquireTopic(s.r, topicName)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	sub := &subscription{s: s, topic: topicName, ctx: sctx, out: make(chan *message.Message), seg: seg,
		cancel: func() { stop(); cancel() }}
	if s.cfg.ConsumerGroup == "" {
		err = sub.startPlain()
	} else {
		err = sub.startMember()
	}
	if err != nil {
		sub.cancel()
		seg.release()
		return nil, err
	}
	return sub, nil
}

// finish ends the subscription: called once, by its last goroutine.
func (sub *subscription) finish() {
	sub.cancel()
	sub.seg.release()
	close(sub.out)
	sub.s.subs.Done()
}

// deliver hands msg out until it is acked: true, or false when the subscription ended
// first (the message then counts as not handled).
func (sub *subscription) deliver(msg *message.Message) bool {
	s := sub.s
	s.delivered.Add(1)
	for m := msg; ; m = msg.Copy() {
		mctx, cancel := context.WithCancel(sub.ctx)
		m.SetContext(mctx)
		select {
		case sub.out <- m:
		case <-sub.ctx.Done():
			cancel()
			return false
		}
		select {
		case <-m.Acked():
			cancel()
			return true
		case <-m.Nacked():
			cancel()
		case <-sub.ctx.Done():
			cancel()
			select {
			case <-m.Acked(): // acked as the subscription ended: handled all the same
				return true
			default:
				return false
			}
		}
		s.redelivered.Add(1)
		if d := s.cfg.NackDelay; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-sub.ctx.Done():
				t.Stop()
				return false
			}
		}
	}
}

// closeAtEnd closes a ring endpoint when ctx ends, besides the end of ctx waking the
// endpoint's blocked call: a ring wait can miss a cancellation that lands between its look
// at ctx and its sleep, and then sleeps on for its timeout (up to 10 s when idle), while a
// Close is never missed. mu, if not nil, is what the endpoint's goroutine holds from taking
// a record to releasing it, so that the Close never comes in between: a record closed
// borrowed is delivered again, and one that was handled and acked must not be. Closing
// twice is harmless.
func closeAtEnd(ctx context.Context, mu *sync.Mutex, close func() error) {
	context.AfterFunc(ctx, func() {
		if mu != nil {
			mu.Lock()
			defer mu.Unlock()
		}
		_ = close()
	})
}

// ended reports whether err means the subscription's end (its context or Close).
func (sub *subscription) ended(err error) bool {
	return sub.ctx.Err() != nil || errors.Is(err, ring.ErrClosed)
}

// --- Without a consumer group: an anonymous topic subscription per Subscribe.

func (sub *subscription) startPlain() error {
	s := sub.s
	rs, err := ring.Subscribe(s.ctx, sub.seg.seg, ring.SubscribeOptions{Start: s.start(), Wait: s.r.Wait})
	if err != nil {
		return fmt.Errorf("subscribing to %q: %w", sub.topic, err)
	}
	closeAtEnd(sub.ctx, nil, rs.Close) // anonymous: what it borrowed is not delivered again anyway
	if s.cfg.InFlight == 1 {
		go func() {
			defer sub.finish()
			defer rs.Close()
			sub.readTopic(rs, sub.deliver)
		}()
		return nil
	}
	// Several in flight: deliverers take messages from the reader as they become free.
	msgs := make(chan *message.Message)
	var wg sync.WaitGroup
	for range s.cfg.InFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for msg := range msgs {
				if !sub.deliver(msg) {
					return
				}
			}
		}()
	}
	go func() {
		defer sub.finish()
		defer wg.Wait()
		defer close(msgs)
		defer rs.Close()
		sub.readTopic(rs, func(msg *message.Message) bool {
			select {
			case msgs <- msg:
				return true
			case <-sub.ctx.Done():
				return false
			}
		})
	}()
	return nil
}

// readTopic reads the topic subscription until the subscription ends, handing each
// message to hand (false: stop). A message is copied out of the ring and released before
// it is handed on: an anonymous subscription ends with its Subscribe, so holding the record
// would protect nothing, and it would hold Block publishers back for the handler's time.
func (sub *subscription) readTopic(rs *ring.Subscriber, hand func(*message.Message) bool) {
	s := sub.s
	for {
		rec, err := rs.Next(sub.ctx)
		if err != nil {
			if sub.ended(err) {
				return
			}
			if !sub.readError(err) {
				return
			}
			continue
		}
		msg, derr := decode(rec.Data, sub.topic)
		if err := rs.Validate(); err != nil { // overwritten while it was copied (Overwrite)
			rs.Release()
			sub.readError(err)
			continue
		}
		if derr != nil {
			rs.Reject()
			s.rejected.Add(1)
			s.logger.Error("Passing over a record", derr, watermill.LogFields{"topic": sub.topic})
			continue
		}
		rs.Release()
		if !hand(msg) {
			return
		}
	}
}

// readError logs and counts an error of a topic read; false when reading cannot go on.
func (sub *subscription) readError(err error) bool {
	s := sub.s
	var lag *ring.LagError
	switch {
	case errors.As(err, &lag):
		s.lost.Add(lag.Missed)
		s.logger.Error("Messages lost", err, watermill.LogFields{"topic": sub.topic, "lost": lag.Missed})
		return true
	case errors.Is(err, ring.ErrCorrupt):
		s.rejected.Add(1)
		s.logger.Error("Passing over a corrupt record", err, watermill.LogFields{"topic": sub.topic})
		return true
	}
	s.logger.Error("Subscription ends", err, watermill.LogFields{"topic": sub.topic})
	return false
}

// --- With a consumer group: a member of the group.
//
// A group is a durable subscription of the topic (named after the group) and an MPMC
// queue (GroupSegment). One member at a time, in any process, holds the durable
// subscription and pumps its messages into the queue; every member reads the queue, so
// each message goes to one member. A durable subscription has one holder at a time, which
// is why members share it through the queue rather than taking turns on it: turns would
// serialise the members and make one that stalls hold up the group.
//
// Taking over: a pump attaches its queue writer before it takes the durable subscription
// and gives the subscription up before it closes the writer, so while a pump lives the
// queue's stream is open. When the last pump goes (closes or dies), the members drain the
// queue and then see the end of its stream (io.EOF, or ring.ErrPeerDead when it died):
// each then tries to become the pump; one succeeds, the others find the subscription held
// (ring.ErrBusy) and wait on the queue again, whose stream the new pump has opened. A
// waiting member sleeps in the queue's wait, never polling.
//
// A member holds the record it delivered until it is acked, so a member that dies or
// closes with a message unacked leaves it to another member (at least once). The pump
// releases a topic record only once it is committed to the queue; a pump that dies in
// between makes its successor pump the record again (at least once).

// member is one Subscribe call in a consumer group.
type member struct {
	*subscription
	group *sharedSeg

	mu      sync.Mutex // guards pump, failures
	pump    *pump
	retries int // takeovers that failed in a row, for the backoff
}

func (sub *subscription) startMember() error {
	s := sub.s
	maxMsg := ring.MPMCMaxMessage(topicSlot(sub.seg))
	g, err := acquireGroup(s.r, sub.topic, s.cfg.ConsumerGroup, maxMsg)
	if err != nil {
		return err
	}
	m := &member{subscription: sub, group: g}
	readers := make([]*ring.MPMCReader, 0, s.cfg.InFlight)
	for range s.cfg.InFlight {
		r, err := ring.NewMPMCReader(g.seg, ring.Options{Wait: s.r.Wait})
		if err != nil {
			for _, r := range readers {
				r.Close()
			}
			g.release()
			return fmt.Errorf("consumer group %q of %q: %w", s.cfg.ConsumerGroup, sub.topic, err)
		}
		readers = append(readers, r)
	}
	if err := m.takeOver(); err != nil {
		for _, r := range readers {
			r.Close()
		}
		g.release()
		return err
	}
	var wg sync.WaitGroup
	for _, r := range readers {
		var mu sync.Mutex
		closeAtEnd(sub.ctx, &mu, r.Close)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			m.readQueue(r, &mu)
		}()
	}
	go func() {
		wg.Wait()
		m.mu.Lock()
		p := m.pump
		m.pump = nil
		m.mu.Unlock()
		if p != nil {
			p.stop()
		}
		g.release()
		sub.finish()
	}()
	return nil
}

// topicSlot is the slot size of the topic segment.
func topicSlot(seg *sharedSeg) uint32 {
	spec, err := ring.SpecOf(seg.seg.Descriptor())
	if err != nil {
		return 0 // not reached: the segment was opened as a topic
	}
	return spec.SlotSize
}

// takeOver makes this member the group's pump unless a live pump exists (nil then too).
func (m *member) takeOver() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pump != nil && !m.pump.ended() {
		return nil
	}
	if m.pump != nil {
		m.pump.stop()
		m.pump = nil
	}
	p, err := m.startPump()
	if err != nil {
		return err
	}
	m.pump = p
	if p == nil {
		m.retries++
	} else {
		m.retries = 0
	}
	return nil
}

// backoff is how long a member waits after a takeover that found the subscription held
// and the queue's stream still ended: only a holder that is not a pump of this adapter
// (or one between giving up the subscription and closing its writer) leaves it so.
func (m *member) backoff() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.retries <= 1 {
		return 0
	}
	return min(time.Millisecond<<min(m.retries, 10), time.Second)
}

// readQueue delivers the group queue's messages until the subscription ends. It holds mu
// from taking a record to releasing it (see closeAtEnd).
func (m *member) readQueue(r *ring.MPMCReader, mu *sync.Mutex) {
	s := m.s
	for {
		rec, err := r.Next(m.ctx)
		if err != nil {
			if m.ended(err) {
				return
			}
			if errors.Is(err, io.EOF) || errors.Is(err, ring.ErrPeerDead) {
				if err := m.takeOver(); err != nil {
					s.logger.Error("Consumer group takeover failed", err, watermill.LogFields{"topic": m.topic})
				}
				if d := m.backoff(); d > 0 {
					t := time.NewTimer(d)
					select {
					case <-t.C:
					case <-m.ctx.Done():
						t.Stop()
						return
					}
				}
				continue
			}
			s.logger.Error("Consumer group member ends", err, watermill.LogFields{"topic": m.topic})
			return
		}
		if !m.handle(r, mu, rec) {
			return
		}
	}
}

// handle delivers the record r borrowed and releases it once acked; false when the
// subscription ended first (the record stays borrowed: Close hands it to another member).
func (m *member) handle(r *ring.MPMCReader, mu *sync.Mutex, rec ring.Record) bool {
	mu.Lock()
	defer mu.Unlock()
	if m.ctx.Err() != nil {
		return false // closeAtEnd may have closed r while this goroutine took rec
	}
	msg, err := decode(rec.Data, m.topic)
	if err != nil {
		r.Reject()
		m.s.rejected.Add(1)
		m.s.logger.Error("Passing over a record", err, watermill.LogFields{"topic": m.topic})
		return true
	}
	if !m.deliver(msg) {
		return false
	}
	r.Release()
	return true
}

// pump moves the topic's messages through the group's durable subscription into the
// group's queue.
type pump struct {
	m      *member
	mu     sync.Mutex // held from Commit to Release (see closeAtEnd)
	w      *ring.MPMCWriter
	rs     *ring.Subscriber
	cancel context.CancelFunc
	done   chan struct{}
}

// pumpBatch is the most messages the pump moves per commit.
const pumpBatch = 64

// startPump attaches the queue writer, then takes the durable subscription: a nil pump
// (and nil error) when another live holder has it.
func (m *member) startPump() (*pump, error) {
	s := m.s
	w, err := ring.NewMPMCWriter(m.group.seg, ring.Options{Wait: s.r.Wait})
	if err != nil {
		return nil, fmt.Errorf("consumer group %q of %q: %w", s.cfg.ConsumerGroup, m.topic, err)
	}
	rs, err := ring.Subscribe(m.ctx, m.seg.seg, ring.SubscribeOptions{
		Name: durableName(s.cfg.ConsumerGroup), Start: s.start(), Wait: s.r.Wait})
	if errors.Is(err, ring.ErrBusy) {
		w.Close()
		return nil, nil
	}
	if err != nil {
		w.Close()
		if m.ctx.Err() != nil {
			return nil, nil
		}
		return nil, fmt.Errorf("consumer group %q of %q: %w", s.cfg.ConsumerGroup, m.topic, err)
	}
	ctx, cancel := context.WithCancel(m.ctx)
	p := &pump{m: m, w: w, rs: rs, cancel: cancel, done: make(chan struct{})}
	closeAtEnd(ctx, &p.mu, func() error { // in the pump's order: the subscription, then the writer
		return errors.Join(rs.Close(), w.Close())
	})
	go p.run(ctx)
	return p, nil
}

func (p *pump) ended() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the pump: the subscription is given up before the writer closes (see above).
func (p *pump) stop() {
	p.cancel()
	<-p.done
}

func (p *pump) run(ctx context.Context) {
	m := p.m
	defer close(p.done)
	defer p.w.Close()
	defer p.rs.Close()
	for {
		if err := p.move(ctx); err != nil {
			if ctx.Err() != nil || errors.Is(err, ring.ErrClosed) {
				return
			}
			if !m.readError(err) {
				return
			}
		}
	}
}

// move waits for the next topic record and moves it, with what else is ready, into the
// queue; the records are released from the topic once committed to the queue.
func (p *pump) move(ctx context.Context) error {
	rec, err := p.rs.Next(ctx)
	if err != nil {
		return err
	}
	buf, err := p.w.Reserve(ctx, rec.Type, len(rec.Data))
	if err != nil {
		return err // the records stay borrowed: the durable subscription delivers them again
	}
	copy(buf, rec.Data)
	for n := 1; n < pumpBatch && p.w.Ready(p.w.MaxMessage()); n++ {
		rec, err := p.rs.TryNext()
		if err != nil {
			break // ErrEmpty, or a lag that the next Next reports again
		}
		buf, err := p.w.TryReserve(rec.Type, len(rec.Data))
		if err != nil {
			if err := p.rs.Validate(); err != nil { // what is committed must be intact
				p.w.Abort()
				p.rs.Release()
				return err
			}
			if err := p.w.Commit(); err != nil {
				return err
			}
			if buf, err = p.w.Reserve(ctx, rec.Type, len(rec.Data)); err != nil {
				return err
			}
		}
		copy(buf, rec.Data)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.rs.Validate(); err != nil { // overwritten while copied (ring.Overwrite)
		p.w.Abort()
		p.rs.Release()
		return err
	}
	if err := p.w.Commit(); err != nil {
		return err
	}
	p.rs.Release()
	return nil
}

// SubscribeInitialize creates topic if it does not exist and, for a consumer group, the
// group's durable subscription and queue, so that the group receives every message
// published from now on even before its first member subscribes.
func (s *Subscriber) SubscribeInitialize(topicName string) error {
	if !s.begin() {
		return ErrClosed
	}
	defer s.subs.Done()
	seg, err := acquireTopic(s.r, topicName)
	if err != nil {
		return err
	}
	defer seg.release()
	if s.cfg.ConsumerGroup == "" {
		return nil
	}
	g, err := acquireGroup(s.r, topicName, s.cfg.ConsumerGroup, ring.MPMCMaxMessage(topicSlot(seg)))
	if err != nil {
		return err
	}
	defer g.release()
	rs, err := ring.Subscribe(s.ctx, seg.seg, ring.SubscribeOptions{Name: durableName(s.cfg.ConsumerGroup), Start: s.start()})
	if errors.Is(err, ring.ErrBusy) {
		return nil // a member holds it: it exists
	}
	if err != nil {
		return fmt.Errorf("consumer group %q of %q: %w", s.cfg.ConsumerGroup, topicName, err)
	}
	return rs.Close()
}

// Close ends every subscription: their channels are closed and the messages they handed
// out and that were not acked count as not handled (a consumer group's go to another
// member). It returns once every subscription has ended. Safe from any goroutine, any
// number of times.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.subs.Wait()
	return nil
}
