package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shmq/shmq/bus"
	"github.com/shmq/shmq/envelope"
)

// BusRoute forwards an event bus (package bus) rather than a topic: outbound, the bridge is
// a subscriber of the bus, so it sees every event published in any process of the machine;
// inbound, it publishes what comes from NATS into the bus, where it reaches Reliable,
// BestEffort and LatestOnly subscribers as a local event would.
type BusRoute struct {
	// Bus is the bus's name (bus.Open); Config.Dir is its directory.
	Bus string
	// Subject is the NATS subject. Default "shmq.bus." + Bus.
	Subject string
	// Out and In say which ways the route forwards; at least one.
	Out, In bool
	// Reliable sends through JetStream: outbound, the bridge is a Reliable subscriber named
	// "bridge-NAME" whose handler returns (acknowledging the event to the bus) only once
	// JetStream acknowledged it, so a bridge killed in between gets the event again from the
	// bus, and JetStream drops the copy; inbound, a durable consumer acknowledged once the
	// event is published into the bus. Otherwise best effort, both ways.
	Reliable bool
	// Types limits the outbound route to these event type names (default: every type).
	Types []string
}

func (r *BusRoute) check(i int, streamSubjects []string) error {
	if r.Bus == "" {
		return fmt.Errorf("%w: bus route %d: no bus", ErrConfig, i)
	}
	if r.Subject == "" {
		r.Subject = "shmq.bus." + r.Bus
	}
	if !validSubject(r.Subject) {
		return fmt.Errorf("%w: bus route %d: subject %q", ErrConfig, i, r.Subject)
	}
	if !r.Out && !r.In {
		return fmt.Errorf("%w: bus route %d: neither Out nor In", ErrConfig, i)
	}
	if r.Reliable && !matchesAny(r.Subject, streamSubjects) {
		return fmt.Errorf("%w: reliable subject %q is not in the stream's %v", ErrConfig, r.Subject, streamSubjects)
	}
	return nil
}

// BusRouteKey names a bus route's direction in Stats: "bus-out:BUS>SUBJECT" or
// "bus-in:SUBJECT>BUS".
func BusRouteKey(out bool, r BusRoute) string {
	if r.Subject == "" {
		r.Subject = "shmq.bus." + r.Bus
	}
	if out {
		return "bus-out:" + r.Bus + ">" + r.Subject
	}
	return "bus-in:" + r.Subject + ">" + r.Bus
}

// runBus forwards one bus route until ctx ends.
func (b *Bridge) runBus(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, r BusRoute) error {
	bs, err := bus.Open(r.Bus, bus.Config{Dir: b.cfg.Dir, Source: "bridge-" + b.cfg.Name})
	if err != nil {
		return fmt.Errorf("bridge: bus %s: %w", r.Bus, err)
	}
	defer bs.Close()
	if r.Reliable {
		if err := b.ensureStream(ctx, js); err != nil {
			return err
		}
	}
	errc := make(chan error, 2)
	running := 0
	if r.Out {
		c := b.stats[BusRouteKey(true, r)]
		sub, err := b.busOut(ctx, bs, nc, js, r, c)
		if err != nil {
			return err
		}
		defer sub.Close()
	}
	if r.In {
		c := b.stats[BusRouteKey(false, r)]
		running++
		go func() { errc <- b.busIn(ctx, bs, nc, js, r, c) }()
	}
	<-ctx.Done()
	for ; running > 0; running-- {
		if err := <-errc; err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

// busOut subscribes the bridge to the bus; its handler sends each event to NATS.
func (b *Bridge) busOut(ctx context.Context, bs *bus.Bus, nc *nats.Conn, js jetstream.JetStream, r BusRoute, c *counters) (*bus.Subscription, error) {
	opts := []bus.SubscribeOption{bus.OfTypes(r.Types...)}
	out := &outMsgs{subject: r.Subject, origin: b.cfg.Name}
	send := func(_ context.Context, ev *envelope.View, raw []byte) error {
		if _, ok := ev.Meta(OriginKey); ok {
			c.looped.Add(1)
			return nil
		}
		out.reset()
		out.add(raw, ev.TypeID)
		m := out.batch()[0]
		if !r.Reliable {
			if err := nc.PublishMsg(m); err != nil {
				c.dropped.Add(1)
				return nil
			}
			c.forwarded.Add(1)
			return nil
		}
		// Reliable: keep trying until JetStream acknowledges or the bridge stops; the bus
		// holds the event (and gives it to the next bridge process if this one dies).
		for {
			actx, cancel := context.WithTimeout(ctx, b.cfg.AckTimeout)
			_, err := js.PublishMsg(actx, m)
			cancel()
			if err == nil {
				c.forwarded.Add(1)
				return nil
			}
			if errors.Is(err, nats.ErrMaxPayload) { // would fail forever and hold up the route
				c.dropped.Add(1)
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.retried.Add(1)
			pause(ctx, b.cfg.RetryWait)
		}
	}
	if r.Reliable {
		// One worker: the events reach NATS in the order the bus hands them over. The
		// timeout covers an unreachable NATS: the handler keeps the event meanwhile.
		opts = append(opts, bus.Delivery(bus.Reliable{Name: "bridge-" + b.cfg.Name, Timeout: 24 * time.Hour}), bus.Workers(1))
	} else {
		opts = append(opts, bus.Delivery(bus.BestEffort{}))
	}
	sub, err := bus.SubscribeEnvelopes(bs, func(hctx context.Context, ev *envelope.View) error {
		return send(hctx, ev, envelopeBytes(ev))
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("bridge: subscribe to bus %s: %w", r.Bus, err)
	}
	return sub, nil
}

// envelopeBytes re-encodes a view (the bus hands its subscribers views, not bytes).
func envelopeBytes(v *envelope.View) []byte {
	h := v.Header()
	b, err := h.Append(nil, v.Payload())
	if err != nil {
		return nil // a view that parsed encodes again; outMsgs.add sends nil as a raw record
	}
	return b
}

// busIn publishes what comes from NATS into the bus.
func (b *Bridge) busIn(ctx context.Context, bs *bus.Bus, nc *nats.Conn, js jetstream.JetStream, r BusRoute, c *counters) error {
	var ids envelope.IDs
	var buf []byte
	publish := func(pctx context.Context, m *nats.Msg) error {
		if v := m.Header[hdrOrigin]; len(v) > 0 && v[0] == b.cfg.Name {
			c.looped.Add(1)
			return nil
		}
		h, err := fromNATS(m, &ids)
		if err != nil {
			return err
		}
		if buf, err = h.Append(buf[:0], m.Data); err != nil {
			return err
		}
		if _, err := bs.PublishEnvelope(pctx, buf); err != nil {
			return err
		}
		c.received.Add(1)
		return nil
	}
	if !r.Reliable {
		s, err := nc.Subscribe(r.Subject, func(m *nats.Msg) {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if err := publish(pctx, m); err != nil {
				c.dropped.Add(1)
			}
		})
		if err != nil {
			return fmt.Errorf("bridge: subscribe %s: %w", r.Subject, err)
		}
		<-ctx.Done()
		return s.Unsubscribe()
	}
	// Topic routes' consumers are shmq_NAME_TOPIC: a bus's has a prefix of its own.
	durable := "shmqbus_" + b.durableName(r.Bus)[len("shmq_"):]
	for ctx.Err() == nil {
		err := b.pull(ctx, js, durable, r.Subject, func(m *nats.Msg) error { return publish(ctx, m) }, c)
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
