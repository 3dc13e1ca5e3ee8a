package watermill

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/shmq/shmq/ring"
)

// Publisher publishes Watermill messages to shmq topics: each Watermill topic is a topic
// segment (package topic) that every subscribing process reads in place.
//
// Publish may be called from any number of goroutines; calls to one topic take turns (a
// ring publisher is for one goroutine at a time), calls to different topics do not.
// Close may be called from any goroutine, any number of times, also while Publish waits.
type Publisher struct {
	cfg    PublisherConfig
	r      resolved
	logger watermill.LoggerAdapter

	ctx    context.Context // ends at Close: wakes a Publish waiting for room
	cancel context.CancelFunc

	mu     sync.Mutex // guards topics, closed, and Add on calls
	topics map[string]*pubTopic
	closed bool
	calls  sync.WaitGroup // Publish calls in progress
}

// pubTopic is this Publisher's endpoint on one topic.
type pubTopic struct {
	mu    sync.Mutex // one Publish at a time on the endpoint
	seg   *sharedSeg
	pub   *ring.Publisher
	enc   *encoder
	sizes []int         // reused by Publish
	err   error         // why the topic could not be opened, for every later Publish
	done  chan struct{} // closed once opened (or failed)
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher. Topics are opened (and created with cfg.Topic if they
// do not exist) on first Publish. ErrInvalidConfig for a configuration it cannot use; a nil
// logger discards.
func NewPublisher(cfg PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	r, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Publisher{cfg: cfg, r: r, logger: orNop(logger), ctx: ctx, cancel: cancel,
		topics: map[string]*pubTopic{}}, nil
}

// Publish publishes msgs to topic in order, each as one envelope (see the package doc),
// and returns once every one is in the topic, where every live subscriber will read it.
// Under ring.Block it waits while the slowest live subscriber is a whole topic behind, up
// to PublisherConfig.Timeout (then context.DeadlineExceeded) or Close (ErrClosed).
// Messages too large for the topic are refused before any is published (ErrTooLarge).
// Messages published before an error stay published.
func (p *Publisher) Publish(topicName string, msgs ...*message.Message) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.calls.Add(1)
	t := p.topics[topicName]
	opener := t == nil
	if opener {
		t = &pubTopic{done: make(chan struct{})}
		p.topics[topicName] = t
	}
	p.mu.Unlock()
	defer p.calls.Done()

	if opener {
		t.err = p.open(t, topicName)
		if t.err != nil { // let a later Publish try again
			p.mu.Lock()
			if p.topics[topicName] == t {
				delete(p.topics, topicName)
			}
			p.mu.Unlock()
		}
		close(t.done)
	}
	select {
	case <-t.done:
	case <-p.ctx.Done():
		return ErrClosed
	}
	if t.err != nil {
		return t.err
	}
	ctx := p.ctx
	if p.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.Timeout)
		defer cancel()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	err := t.publish(ctx, msgs)
	if p.ctx.Err() != nil && err != nil {
		return fmt.Errorf("%w (publishing to %q: %w)", ErrClosed, topicName, err)
	}
	if err != nil {
		return fmt.Errorf("publishing to %q: %w", topicName, err)
	}
	return nil
}

func (p *Publisher) open(t *pubTopic, topicName string) error {
	seg, err := acquireTopic(p.r, topicName)
	if err != nil {
		return err
	}
	pub, err := ring.NewPublisher(seg.seg, ring.Options{Wait: p.r.Wait})
	if err != nil {
		seg.release()
		return fmt.Errorf("topic %q: %w", topicName, err)
	}
	t.seg, t.pub, t.enc = seg, pub, newEncoder(topicName, p.cfg.Source)
	p.logger.Debug("Publishing to a topic", watermill.LogFields{"topic": topicName, "segment": seg.seg.Name(), "max_message": pub.MaxMessage()})
	return nil
}

// publish writes msgs, each envelope straight into the ring, committing them in batches:
// a batch is committed before the publisher would wait for room, so that it never holds
// the topic lock (which other publishers wait for) while it waits.
func (t *pubTopic) publish(ctx context.Context, msgs []*message.Message) error {
	now := time.Now()
	t.sizes = t.sizes[:0]
	for _, msg := range msgs {
		_, n, err := t.enc.header(msg, now)
		if err != nil {
			return err
		}
		if n > t.pub.MaxMessage() {
			return fmt.Errorf("message %s: %w: envelope of %d bytes, the topic carries %d", msg.UUID, ErrTooLarge, n, t.pub.MaxMessage())
		}
		t.sizes = append(t.sizes, n)
	}
	reserved := 0
	for i, msg := range msgs {
		h, _, err := t.enc.header(msg, now) // again: the metadata buffer is reused
		if err != nil {
			return t.abort(reserved, err)
		}
		var buf []byte
		if reserved > 0 {
			buf, err = t.pub.TryReserve(t.enc.typeID, t.sizes[i])
			if errors.Is(err, ring.ErrFull) {
				if err := t.pub.Commit(); err != nil {
					return err
				}
				reserved = 0
			} else if err != nil {
				return t.abort(reserved, err)
			}
		}
		if reserved == 0 {
			if buf, err = t.pub.Reserve(ctx, t.enc.typeID, t.sizes[i]); err != nil {
				return err
			}
		}
		reserved++
		payload, err := h.Put(buf, len(msg.Payload))
		if err != nil {
			return t.abort(reserved, err)
		}
		copy(payload, msg.Payload)
	}
	if reserved == 0 {
		return nil
	}
	return t.pub.Commit()
}

func (t *pubTopic) abort(reserved int, err error) error {
	if reserved > 0 {
		t.pub.Abort()
	}
	return err
}

// Close closes the publisher: Publish calls waiting for room return ErrClosed, later ones
// too. The topics stay (a topic outlives its publishers; subscribers keep waiting for the
// next one). Safe from any goroutine, any number of times.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	topics := make([]*pubTopic, 0, len(p.topics))
	for _, t := range p.topics {
		topics = append(topics, t)
	}
	p.mu.Unlock()
	p.cancel()
	// Closing the endpoints wakes a Publish waiting for room even if its wait missed the
	// cancellation (see closeAtEnd); a ring endpoint may be closed while another goroutine
	// uses it.
	var errs []error
	for _, t := range topics {
		<-t.done // an opener finishes at once: it waits for nothing
		if t.pub == nil {
			continue
		}
		if err := t.pub.Close(); err != nil && !errors.Is(err, ring.ErrClosed) {
			errs = append(errs, err)
		}
	}
	p.calls.Wait() // no Publish touches the topics from here on
	for _, t := range topics {
		if t.pub != nil {
			t.seg.release()
		}
	}
	return errors.Join(errs...)
}
