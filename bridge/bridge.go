package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

// Test hooks: a cross-process test kills the bridge process exactly between two steps.
var (
	testAfterLocalWrite func() // an inbound message is in the local topic, not yet acknowledged
	testAfterAck        func() // JetStream acknowledged a batch, its records are not yet released
)

// Stats are one route's counters since its bridge started.
type Stats struct {
	// Forwarded counts messages sent to NATS (acknowledged by JetStream on a reliable route).
	Forwarded uint64
	// Received counts messages written into the local topic from NATS.
	Received uint64
	// Dropped counts messages lost on a best-effort route (NATS refused them, the local topic
	// was full), messages a lapped subscription missed on an Overwrite topic, and messages
	// no retry can deliver (larger than the server's max_payload, or not an envelope the
	// local topic can take).
	Dropped uint64
	// Retried counts batches sent again after a failure or an acknowledgement timeout.
	Retried uint64
	// Duplicates counts inbound messages not written because the topic had them already.
	Duplicates uint64
	// Looped counts messages not forwarded because they had come from NATS or from this
	// bridge.
	Looped uint64
}

// Bridge forwards the routes of its Config while Run runs.
type Bridge struct {
	cfg   Config
	stats map[string]*counters    // by RouteKey
	mu    sync.Mutex              // guards sets against Closes at once
	sets  map[string]*metrics.Set // the counters' sets, by topic
}

// New checks cfg (ErrConfig) and opens the shared-memory counters of its routes (see
// metrics.go), so that shmctl stat of each bridged topic shows them: a bridge ready to Run.
// Close it when done.
func New(cfg Config) (*Bridge, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Bridge{cfg: c, stats: map[string]*counters{}, sets: map[string]*metrics.Set{}}
	if err := b.openCounters(); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Close closes the bridge's counter sets (they stay in the directory, for shmctl). Safe to
// call more than once, from any goroutine; call it after Run returned.
func (b *Bridge) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for k, s := range b.sets {
		errs = append(errs, s.Close())
		delete(b.sets, k)
	}
	return errors.Join(errs...)
}

// RouteKey names a route in Stats: "out:TOPIC>SUBJECT" or "in:SUBJECT>TOPIC".
func RouteKey(out bool, r Route) string {
	if r.Subject == "" {
		r.Subject = "shmq." + r.Topic
	}
	if out {
		return "out:" + r.Topic + ">" + r.Subject
	}
	return "in:" + r.Subject + ">" + r.Topic
}

// Stats returns every route's counters, by RouteKey. Safe from any goroutine.
func (b *Bridge) Stats() map[string]Stats {
	m := make(map[string]Stats, len(b.stats))
	for k, c := range b.stats {
		m[k] = c.snapshot()
	}
	return m
}

// Run is New followed by Bridge.Run and Close.
func Run(ctx context.Context, cfg Config) error {
	b, err := New(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	return b.Run(ctx)
}

// Run forwards until ctx ends, then returns nil after every route stopped; or the first
// error that stops a route for good (a local topic that cannot be opened, a JetStream
// stream that cannot be created). NATS being unreachable is not such an error: the bridge
// reconnects by itself, counting what it drops and retries. Run once per Bridge.
func (b *Bridge) Run(ctx context.Context) error {
	nc, err := nats.Connect(b.cfg.URL,
		nats.Name("shmq-bridge-"+b.cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(b.cfg.RetryWait),
		nats.RetryOnFailedConnect(true),
	)
	if err != nil {
		return fmt.Errorf("bridge: connect %s: %w", b.cfg.URL, err)
	}
	defer nc.Close()
	var js jetstream.JetStream
	if b.reliable() {
		if js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(b.cfg.Window)); err != nil {
			return fmt.Errorf("bridge: jetstream: %w", err)
		}
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	start := func(fn func(context.Context) error) {
		wg.Go(func() {
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				cancel(err)
			}
		})
	}
	for _, r := range b.cfg.Out {
		c := b.stats[RouteKey(true, r)]
		if r.Reliable {
			start(func(ctx context.Context) error { return b.outReliable(ctx, js, r, c) })
		} else {
			start(func(ctx context.Context) error { return b.outBestEffort(ctx, nc, r, c) })
		}
	}
	for _, r := range b.cfg.Buses {
		start(func(ctx context.Context) error { return b.runBus(ctx, nc, js, r) })
	}
	for _, r := range b.cfg.In {
		c := b.stats[RouteKey(false, r)]
		if r.Reliable {
			start(func(ctx context.Context) error { return b.inReliable(ctx, js, r, c) })
		} else {
			start(func(ctx context.Context) error { return b.inBestEffort(ctx, nc, r, c) })
		}
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

func (b *Bridge) reliable() bool {
	for _, r := range append(append([]Route(nil), b.cfg.Out...), b.cfg.In...) {
		if r.Reliable {
			return true
		}
	}
	for _, r := range b.cfg.Buses {
		if r.Reliable {
			return true
		}
	}
	return false
}

// openTopic opens the route's local topic, creating it with the route's Config (or the
// default for its kind) if it does not exist.
func (b *Bridge) openTopic(r Route, inbound bool) (*topic.Topic, error) {
	opts := shm.Options{Dir: b.cfg.Dir}
	c := r.Config
	if c.Policy == 0 && c.Slots == 0 && c.MaxMessage == 0 {
		c.Policy = ring.Overwrite
		if inbound && r.Reliable {
			c.Policy = ring.Block
		}
	}
	t, err := topic.Open(r.Topic, c, opts)
	if errors.Is(err, topic.ErrMismatch) { // it exists with its own shape: use that
		jctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		t, err = topic.Join(jctx, r.Topic, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: topic %s: %w", r.Topic, err)
	}
	return t, nil
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// durableName is a JetStream consumer name for this bridge and topic: only the characters
// consumer names allow.
func (b *Bridge) durableName(topicName string) string { return durableName(b.cfg.Name, topicName) }

func durableName(bridgeName, topicName string) string {
	return "shmq_" + bridgeName + "_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, topicName)
}
