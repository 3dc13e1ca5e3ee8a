package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shmq/shmq/ring"
)

// countLag adds a lapped subscription's missed records to dropped and reports whether err
// was a lag (which the subscription has already recovered from).
func countLag(err error, c *counters) bool {
	var lag *ring.LagError
	if errors.As(err, &lag) {
		c.dropped.Add(lag.Missed)
		return true
	}
	return false
}

// outBestEffort forwards a topic to core NATS with an anonymous subscription from the next
// message, in batches of up to Window: what NATS does not take is dropped, and the topic
// never waits for NATS.
func (b *Bridge) outBestEffort(ctx context.Context, nc *nats.Conn, r Route, c *counters) error {
	t, err := b.openTopic(r, false)
	if err != nil {
		return err
	}
	defer t.Close()
	sub, err := t.Subscribe(ctx, ring.SubscribeOptions{Start: ring.FromLatest, Wait: b.cfg.Wait})
	if err != nil {
		return fmt.Errorf("bridge: subscribe %s: %w", r.Topic, err)
	}
	defer sub.Close()
	stop := context.AfterFunc(ctx, func() { sub.Close() })
	defer stop()
	out := &outMsgs{subject: r.Subject, origin: b.cfg.Name}
	for {
		// A batch is copied out and checked intact before the records are released, then sent.
		msgs, err := b.borrow(ctx, sub, r, c, out)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		sub.Release()
		c.looped.Add(uint64(out.looped))
		for _, m := range msgs {
			if err := nc.PublishMsg(m); err != nil {
				c.dropped.Add(1)
				continue
			}
			c.forwarded.Add(1)
		}
	}
}

// outReliable forwards a topic to JetStream with the bridge's durable subscription: it
// borrows up to Window records, publishes them asynchronously with their envelope ids as
// Nats-Msg-Id, and releases them (advancing the durable position) only when every one is
// acknowledged. On a failure it sends the batch again, its records still borrowed (so that
// the subscription keeps holding a Block topic's publishers back), and JetStream drops the
// copies it already has.
func (b *Bridge) outReliable(ctx context.Context, js jetstream.JetStream, r Route, c *counters) error {
	t, err := b.openTopic(r, false)
	if err != nil {
		return err
	}
	defer t.Close()
	if err := b.ensureStream(ctx, js); err != nil {
		return err
	}
	name := "bridge." + b.cfg.Name
	out := &outMsgs{subject: r.Subject, origin: b.cfg.Name}
	futs := make([]jetstream.PubAckFuture, 0, b.cfg.Window)
	for ctx.Err() == nil {
		sub, err := t.Subscribe(ctx, ring.SubscribeOptions{Name: name, Start: ring.FromOldest, Wait: b.cfg.Wait})
		if errors.Is(err, ring.ErrBusy) { // an earlier run's subscriber is still closing
			pause(ctx, b.cfg.RetryWait)
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("bridge: subscribe %s as %s: %w", r.Topic, name, err)
		}
		stop := context.AfterFunc(ctx, func() { sub.Close() })
		for {
			var msgs []*nats.Msg
			if msgs, err = b.borrow(ctx, sub, r, c, out); err != nil {
				break
			}
			looped := out.looped
			var tooLarge int
			// A failed batch is sent again with its records still borrowed: closed, even for
			// a moment, the durable subscription would hold no Block publisher back, and
			// they would overwrite what it has not forwarded.
			for {
				if tooLarge, err = b.publishAll(ctx, js, msgs, &futs); !errors.Is(err, errRetry) || ctx.Err() != nil {
					break
				}
				c.retried.Add(1)
				// JetStream may still hold the failed messages for its own retries: send
				// copies, and build the next batches in new messages.
				msgs = cloneMsgs(msgs)
				out = &outMsgs{subject: r.Subject, origin: b.cfg.Name}
				pause(ctx, b.cfg.RetryWait)
			}
			if err != nil {
				break
			}
			if testAfterAck != nil {
				testAfterAck()
			}
			sub.Release()
			c.looped.Add(uint64(looped)) // once, however often the batch was sent
			c.forwarded.Add(uint64(len(msgs) - tooLarge))
			c.dropped.Add(uint64(tooLarge))
		}
		stop()
		sub.Close()
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errRetry) {
			return err
		}
		// JetStream may still hold the failed batch's messages for its own retries: build the
		// next batches in new ones.
		out = &outMsgs{subject: r.Subject, origin: b.cfg.Name}
		pause(ctx, b.cfg.RetryWait)
	}
	return nil
}

// errRetry marks a failure the bridge recovers from by sending again.
var errRetry = errors.New("bridge: retry")

// cloneMsgs copies msgs into new messages (header maps and data included).
func cloneMsgs(msgs []*nats.Msg) []*nats.Msg {
	out := make([]*nats.Msg, len(msgs))
	for i, m := range msgs {
		h := make(nats.Header, len(m.Header))
		for k, v := range m.Header {
			h[k] = append([]string(nil), v...)
		}
		out[i] = &nats.Msg{Subject: m.Subject, Header: h, Data: append([]byte(nil), m.Data...)}
	}
	return out
}

// borrow waits for the next record and takes the ones after it that are ready, up to
// Window, returning the NATS messages to send; records that came from NATS are skipped
// (they stay borrowed and are released with the batch; out.looped counts them).
func (b *Bridge) borrow(ctx context.Context, sub *ring.Subscriber, r Route, c *counters, out *outMsgs) ([]*nats.Msg, error) {
	out.reset()
	for n := 0; n < b.cfg.Window; n++ {
		var rec ring.Record
		var err error
		if n == 0 {
			rec, err = sub.Next(ctx)
		} else {
			rec, err = sub.TryNext()
		}
		if countLag(err, c) {
			out.reset() // the lapped batch is gone; what is held now starts afresh
			return nil, nil
		}
		if errors.Is(err, ring.ErrEmpty) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("bridge: read %s: %w", r.Topic, err)
		}
		if cameFromNATS(rec.Data) {
			out.looped++ // counted when the batch is released
			continue
		}
		out.add(rec.Data, rec.Type)
	}
	if countLag(sub.Validate(), c) {
		out.reset()
		return nil, nil
	}
	return out.batch(), nil
}

// publishAll sends msgs to JetStream and waits until each is acknowledged: errRetry when one
// fails or AckTimeout passes first. A message larger than the server takes (its
// max_payload) would fail on every retry and hold up the route for good: it is skipped, and
// tooLarge says how many were.
func (b *Bridge) publishAll(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg, futs *[]jetstream.PubAckFuture) (tooLarge int, err error) {
	*futs = (*futs)[:0]
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m)
		if errors.Is(err, nats.ErrMaxPayload) {
			tooLarge++
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("%w: publish: %w", errRetry, err)
		}
		*futs = append(*futs, f)
	}
	timeout := time.NewTimer(b.cfg.AckTimeout)
	defer timeout.Stop()
	for _, f := range *futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, fmt.Errorf("%w: acknowledgement: %w", errRetry, err)
		case <-timeout.C:
			return 0, fmt.Errorf("%w: no acknowledgement in %v", errRetry, b.cfg.AckTimeout)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return tooLarge, nil
}

// ensureStream creates or updates the stream that carries reliable routes, retrying while
// JetStream is unreachable.
func (b *Bridge) ensureStream(ctx context.Context, js jetstream.JetStream) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, b.cfg.AckTimeout)
		_, err := js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{
			Name:       b.cfg.Stream,
			Subjects:   b.cfg.StreamSubjects,
			Duplicates: b.cfg.Dedup,
			Storage:    jetstream.FileStorage,
		})
		cancel()
		if err == nil || ctx.Err() != nil {
			return ctx.Err()
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode != jetstream.JSErrCodeJetStreamNotEnabled {
			return fmt.Errorf("bridge: stream %s: %w", b.cfg.Stream, err)
		}
		pause(ctx, b.cfg.RetryWait)
	}
}
