package bus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/dlq"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

// Bus is one process's handle on an event bus: it publishes events and runs the
// subscriptions made with Subscribe. Every method is safe for concurrent use by multiple
// goroutines; Publish calls are serialised by a mutex (a ring's writer is for one
// goroutine at a time).
type Bus struct {
	name     string
	cfg      Config
	opts     shm.Options
	reg      *registry
	sourceID uint32

	types sync.Map // reflect.Type → registration (*typeInfo[T])

	mu      sync.Mutex // guards the publishing state below
	ids     envelope.IDs
	lanes   [envelope.Priorities]*topic.Topic
	pubs    [envelope.Priorities]*ring.Publisher
	gen     uint64 // registry generation the queues below reflect; odd: never read
	queues  []*pubQueue
	scratch []byte
	limiter *limiter

	closing  atomic.Bool
	subsMu   sync.Mutex
	subs     map[*Subscription]struct{}
	dlq      *dlq.Queue
	metrics  *busMetrics
	counters counters // this process's totals (see Stats)
	health   healthState
	closeErr error
	closed   sync.Once
}

// pubQueue is a Reliable subscription's queue as a publisher holds it.
type pubQueue struct {
	entry      subEntry
	segs       [envelope.Priorities]*shm.Segment
	ws         [envelope.Priorities]*ring.MPMCWriter
	qm         *subMetrics // the subscription's set (writers only)
	lastSample time.Time
}

// Open opens the bus name in cfg.Dir, creating its segments if they do not exist. cfg's zero
// fields take their SHMQ_* environment values or defaults (see Config); an invalid result
// is an error wrapping ErrConfig. name must be a valid segment name short enough for its
// suffixes (shm.ErrInvalidName). Errors of shm and topic otherwise (shm.ErrMismatch for a
// bus created with another geometry).
func Open(name string, cfg Config) (*Bus, error) {
	cfg, err := cfg.resolve(getenv)
	if err != nil {
		return nil, err
	}
	if err := shm.ValidateName(queueName(name, maxNameSub(), envelope.Critical)); err != nil {
		return nil, fmt.Errorf("bus name %q: %w", name, err)
	}
	b := &Bus{name: name, cfg: cfg, opts: shm.Options{Dir: cfg.Dir}, sourceID: envelope.TypeID(cfg.Source),
		subs: map[*Subscription]struct{}{}, gen: 1}
	if cfg.Rate > 0 {
		b.limiter = newLimiter(cfg.Rate, cfg.Burst)
	}
	ok := false
	defer func() {
		if !ok {
			b.release()
		}
	}()
	if b.reg, err = openRegistry(name, b.opts); err != nil {
		return nil, err
	}
	for p := range envelope.Priorities {
		t, err := topic.Open(laneName(name, envelope.Priority(p)), b.laneConfig(), b.opts)
		if err != nil {
			return nil, err
		}
		b.lanes[p] = t
		if b.pubs[p], err = t.Publisher(ring.Options{}); err != nil {
			return nil, err
		}
	}
	if b.dlq, err = openDeadLetters(name, cfg, b.opts); err != nil {
		return nil, err
	}
	if b.metrics, err = openBusMetrics(name, b.opts); err != nil {
		return nil, err
	}
	ok = true
	return b, nil
}

func maxNameSub() string {
	var s [maxSubName]byte
	for i := range s {
		s[i] = 'x'
	}
	return string(s[:])
}

func (b *Bus) laneConfig() topic.Config {
	return topic.Config{Policy: ring.Overwrite, Slots: b.cfg.LaneSlots, MaxMessage: b.cfg.MaxEvent}
}

// queueSpec is the ring spec of one lane of a Reliable queue.
func (b *Bus) queueSpec() ring.Spec {
	slot := shm.NextPow2(uint64(b.cfg.MaxEvent) + 16)
	size := max(slot*b.cfg.QueueSlots, 4096, 2*slot)
	return ring.Spec{Kind: ring.MPMC, Size: size, SlotSize: uint32(slot)}
}

// Name is the bus's name.
func (b *Bus) Name() string { return b.name }

// Config is the configuration in use, every field resolved.
func (b *Bus) Config() Config { return b.cfg }

// typeInfo is a Go type registered on a bus.
type typeInfo[T any] struct {
	name  string
	id    uint32
	codec codec.Codec[T]
	fixed *codec.Fixed[T] // non-nil when codec is a Fixed: delivery views the payload in place
	mu    sync.Mutex      // codecs are for one goroutine at a time
}

// Register names the Go type T on b as the event type name, encoded by c. Publish and
// Subscribe of T need it, in every process. A codec.Fixed[T] codec makes delivery
// zero-copy (the handler's *T points into shared memory). It returns an error if T is
// registered already or name is empty or longer than 255 bytes.
func Register[T any](b *Bus, name string, c codec.Codec[T]) error {
	if name == "" || len(name) > 255 || c == nil {
		return fmt.Errorf("%w: type name %q (1 to 255 bytes) and a codec are required", ErrConfig, name)
	}
	ti := &typeInfo[T]{name: name, id: envelope.TypeID(name), codec: c}
	ti.fixed, _ = c.(*codec.Fixed[T])
	if _, dup := b.types.LoadOrStore(reflect.TypeFor[T](), ti); dup {
		return fmt.Errorf("%w: %v is registered already", ErrConfig, reflect.TypeFor[T]())
	}
	return nil
}

func lookup[T any](b *Bus) (*typeInfo[T], error) {
	v, ok := b.types.Load(reflect.TypeFor[T]())
	if !ok {
		return nil, fmt.Errorf("%w: %v", ErrNotRegistered, reflect.TypeFor[T]())
	}
	return v.(*typeInfo[T]), nil
}

// PublishOption changes one field of a published envelope.
type PublishOption struct {
	what uint8
	p    envelope.Priority
	s    string
	kv   []envelope.KV
}

// WithPriority publishes at p (default envelope.Normal).
func WithPriority(p envelope.Priority) PublishOption { return PublishOption{what: 1, p: p} }

// WithCorrelation sets the correlation id.
func WithCorrelation(id string) PublishOption { return PublishOption{what: 2, s: id} }

// WithMeta adds metadata entries.
func WithMeta(kv ...envelope.KV) PublishOption { return PublishOption{what: 3, kv: kv} }

// Publish sends *v as an event of T's registered type from this process's Source and
// returns its id. The event goes to the best-effort lane of its priority (every BestEffort
// and LatestOnly subscriber that wants it) and to the queue of every Reliable subscription
// whose type and source filters match, including subscriptions made in any process before
// this call began. It waits only for the rate limit (Config.Rate) and, with BlockWhenFull,
// for room in a full queue, both until ctx ends.
//
// Errors: ErrShuttingDown after Shutdown or Close began; ErrNotRegistered; ErrQueueFull
// (wrapped, naming the subscription: the event reached every other destination);
// envelope.ErrTooLarge or ring.ErrTooLarge for an event above Config.MaxEvent; ctx's error;
// the codec's error.
func Publish[T any](ctx context.Context, b *Bus, v *T, opts ...PublishOption) (uuid.UUID, error) {
	if b.closing.Load() {
		return uuid.UUID{}, ErrShuttingDown
	}
	ti, err := lookup[T](b)
	if err != nil {
		return uuid.UUID{}, err
	}
	if err := b.limit(ctx); err != nil {
		return uuid.UUID{}, err
	}
	h := envelope.Header{Type: ti.name, Source: b.cfg.Source, Priority: envelope.Normal, Attempt: 1}
	for i := range opts {
		switch o := &opts[i]; o.what {
		case 1:
			h.Priority = o.p
		case 2:
			h.Correlation = o.s
		case 3:
			h.Meta = append(h.Meta, o.kv...)
		}
	}
	if h.Priority >= envelope.Priorities {
		return uuid.UUID{}, fmt.Errorf("%w: priority %d", ErrConfig, h.Priority)
	}
	ti.mu.Lock()
	defer ti.mu.Unlock()
	n, err := ti.codec.Size(v)
	if err != nil {
		return uuid.UUID{}, err
	}
	size, err := h.Size(n)
	if err != nil {
		return uuid.UUID{}, err
	}
	if size > b.cfg.MaxEvent {
		return uuid.UUID{}, fmt.Errorf("%w: event of %d bytes, MaxEvent is %d", ring.ErrTooLarge, size, b.cfg.MaxEvent)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	h.Time = time.Now()
	if h.ID, err = b.ids.New(h.Time); err != nil {
		return uuid.UUID{}, err
	}
	rec, err := b.reserve(ctx, h.Priority, ti.id, size)
	if err != nil {
		return uuid.UUID{}, err
	}
	payload, err := h.Put(rec, n)
	if err == nil {
		err = ti.codec.Encode(payload, v)
	}
	if err != nil {
		b.pubs[h.Priority].Abort()
		return uuid.UUID{}, err
	}
	return h.ID, b.commit(ctx, h.Priority, ti.id, b.sourceID, rec)
}

// PublishEnvelope publishes env, an encoded envelope (package envelope) made elsewhere: by
// another bus's process, or received from the network (the NATS bridge). It goes where
// Publish sends an event of its type, priority and source, unchanged: same id, time,
// source and attempt. It returns the envelope's id. Safe for concurrent use; it waits as
// Publish does.
//
// Errors: those of Publish, and envelope.ErrMalformed (or envelope's other errors) for
// bytes that are not a valid envelope.
func (b *Bus) PublishEnvelope(ctx context.Context, env []byte) (uuid.UUID, error) {
	if b.closing.Load() {
		return uuid.UUID{}, ErrShuttingDown
	}
	v, err := envelope.Parse(env)
	if err != nil {
		return uuid.UUID{}, err
	}
	if v.TypeID != envelope.TypeID(string(v.Type())) {
		return uuid.UUID{}, fmt.Errorf("%w: type id %#x is not that of %q", envelope.ErrMalformed, v.TypeID, v.Type())
	}
	if len(env) > b.cfg.MaxEvent {
		return uuid.UUID{}, fmt.Errorf("%w: event of %d bytes, MaxEvent is %d", ring.ErrTooLarge, len(env), b.cfg.MaxEvent)
	}
	if err := b.limit(ctx); err != nil {
		return uuid.UUID{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	rec, err := b.reserve(ctx, v.Priority, v.TypeID, len(env))
	if err != nil {
		return uuid.UUID{}, err
	}
	copy(rec, env)
	return v.ID, b.commit(ctx, v.Priority, v.TypeID, envelope.TypeID(string(v.Source())), rec)
}

// limit waits for the rate limiter, if there is one.
func (b *Bus) limit(ctx context.Context) error {
	if b.limiter == nil {
		return nil
	}
	return b.limiter.wait(ctx)
}

// reserve is the first half of a publish, with b.mu held: it brings the Reliable queues up
// to date and reserves size bytes in lane p for an event of type typ.
func (b *Bus) reserve(ctx context.Context, p envelope.Priority, typ uint32, size int) ([]byte, error) {
	if b.closing.Load() {
		return nil, ErrShuttingDown
	}
	if err := b.refreshQueues(); err != nil {
		return nil, err
	}
	return b.pubs[p].Reserve(ctx, typ, size)
}

// commit is the second half, with b.mu held: it commits the envelope rec in the lane, then
// copies it into the queue of every Reliable subscription that wants it.
func (b *Bus) commit(ctx context.Context, p envelope.Priority, typ, source uint32, rec []byte) error {
	reliable := false
	for _, q := range b.queues {
		if q.entry.wants(typ, source) {
			reliable = true
			break
		}
	}
	if reliable {
		b.scratch = append(b.scratch[:0], rec...)
	}
	if err := b.pubs[p].Commit(); err != nil {
		return err
	}
	b.counters.published[p].Add(1)
	b.metrics.published[p].Inc()
	if !reliable {
		return nil
	}
	var errs error
	for _, q := range b.queues {
		if !q.entry.wants(typ, source) {
			continue
		}
		if err := b.enqueue(ctx, q, p, typ, b.scratch); err != nil {
			errs = errors.Join(errs, err)
		}
	}
	return errs
}

// enqueue copies the envelope env into q's lane p, with b.mu held. The queue is full when
// its lane has no free slot, or when Config.QueueBytes is set and the bytes queued (every
// publisher's, counted in the subscription's bus_queue_bytes) would pass it.
func (b *Bus) enqueue(ctx context.Context, q *pubQueue, p envelope.Priority, typ uint32, env []byte) error {
	if err := b.waitBytes(ctx, q, len(env)); err != nil {
		return err
	}
	w := q.ws[p]
	rec, err := w.TryReserve(typ, len(env))
	if errors.Is(err, ring.ErrFull) {
		b.counters.full.Add(1)
		q.qm.queueFull.Inc()
		if b.cfg.QueueFull != BlockWhenFull {
			return fmt.Errorf("%w: %s (%v lane)", ErrQueueFull, q.entry.name, p)
		}
		rec, err = w.Reserve(ctx, typ, len(env))
	}
	if err != nil {
		return fmt.Errorf("bus: queue %s: %w", q.entry.name, err)
	}
	copy(rec, env)
	if err := w.Commit(); err != nil {
		return fmt.Errorf("bus: queue %s: %w", q.entry.name, err)
	}
	// After the commit: a publisher that dies between the two counts too little, never too
	// much, so that a queue cannot stay full of bytes nobody holds.
	q.qm.bytes.Add(int64(len(env)))
	if now := time.Now(); now.Sub(q.lastSample) >= sampleEvery {
		q.lastSample = now
		sampleQueue(q.segs, q.qm)
	}
	return nil
}

// waitBytes returns once n more bytes fit q's byte bound (Config.QueueBytes), or
// ErrQueueFull (FailWhenFull), or ctx's error (BlockWhenFull). The count is shared by
// every process and not reserved: publishers racing for the last bytes may pass the
// bound by an event each.
func (b *Bus) waitBytes(ctx context.Context, q *pubQueue, n int) error {
	limit := b.cfg.QueueBytes
	if limit <= 0 || q.qm.bytes.Load()+int64(n) <= limit {
		return nil
	}
	b.counters.full.Add(1)
	q.qm.queueFull.Inc()
	if b.cfg.QueueFull != BlockWhenFull {
		return fmt.Errorf("%w: %s (%d bytes queued, QueueBytes %d)", ErrQueueFull, q.entry.name, q.qm.bytes.Load(), limit)
	}
	wait := 50 * time.Microsecond
	for q.qm.bytes.Load()+int64(n) > limit {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("bus: queue %s: %w", q.entry.name, ctx.Err())
		}
		wait = min(2*wait, 5*time.Millisecond)
	}
	return nil
}

// refreshQueues rereads the registry if its generation changed since the last Publish:
// one atomic load when nothing changed. Called with b.mu held.
func (b *Bus) refreshQueues() error {
	gen := b.reg.generation()
	if gen == b.gen {
		return nil
	}
	entries, gen := b.reg.read()
	keep := b.queues[:0:0]
	old := map[string]*pubQueue{}
	for _, q := range b.queues {
		old[q.entry.name] = q
	}
	var firstErr error
	for _, e := range entries {
		if q, ok := old[e.name]; ok && q.entry.created == e.created {
			q.entry = e
			keep = append(keep, q)
			delete(old, e.name)
			continue
		}
		q, err := b.openQueue(e, true)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		keep = append(keep, q)
	}
	for _, q := range old {
		q.close()
	}
	b.queues = keep
	if firstErr == nil {
		b.gen = gen
	}
	return firstErr
}

// openQueue opens (creating if need be) the three lanes of e's queue, with writers if
// writers is true.
func (b *Bus) openQueue(e subEntry, writers bool) (*pubQueue, error) {
	q := &pubQueue{entry: e}
	for p := range envelope.Priorities {
		seg, _, err := ring.OpenOrCreate(queueName(b.name, e.name, envelope.Priority(p)), b.queueSpec(), b.opts)
		if err != nil {
			q.close()
			return nil, err
		}
		q.segs[p] = seg
		if writers {
			if q.ws[p], err = ring.NewMPMCWriter(seg, ring.Options{}); err != nil {
				q.close()
				return nil, err
			}
		}
	}
	if writers {
		var err error
		if q.qm, err = openSubMetrics(b.name, e.name, b.opts); err != nil {
			q.close()
			return nil, err
		}
	}
	return q, nil
}

func (q *pubQueue) close() {
	q.qm.close()
	for p := range q.segs {
		if q.ws[p] != nil {
			q.ws[p].Close()
		}
		if q.segs[p] != nil {
			q.segs[p].Close()
		}
	}
}

// release closes every segment b holds.
func (b *Bus) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, q := range b.queues {
		q.close()
	}
	b.queues = nil
	for p := range b.lanes {
		if b.pubs[p] != nil {
			b.pubs[p].Close()
		}
		if b.lanes[p] != nil {
			b.lanes[p].Close()
		}
	}
	if b.dlq != nil {
		b.dlq.Close()
	}
	if b.metrics != nil {
		b.metrics.set.Close()
	}
	if b.reg != nil {
		b.reg.seg.Close()
	}
}
