package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// Mode is a subscription's delivery mode: BestEffort, Reliable or LatestOnly.
type Mode interface{ mode() string }

// BestEffort delivers every event the subscriber keeps up with and never slows a
// publisher: a subscriber more than Config.LaneSlots events behind loses the oldest, and
// counts them (Stats.Dropped). A handler's error is counted, not retried. The default.
type BestEffort struct{}

// LatestOnly delivers, of each event type, only the newest event published while the
// handler was busy: a slow status subscriber skips the stale ones (Stats.Conflated) and
// never slows a publisher.
type LatestOnly struct{}

// Reliable delivers through a durable queue named Name (1 to 64 bytes of [A-Za-z0-9_-]),
// shared by every worker of that name in any process: each event is handled by one worker.
// The handler's nil return is the acknowledgement; an error, or a return later than
// Timeout (if > 0), fails the attempt (ErrDeliveryTimeout for the latter) and the event is
// delivered again after the retry backoff, up to the retry policy's MaxAttempts, then goes
// to the dead-letter queue. A worker process that dies holding an event has it delivered
// again to another worker (as the next attempt): nothing acknowledged is lost, an event may
// be handled more than once. Events published while no worker runs wait in the queue.
type Reliable struct {
	Name    string
	Timeout time.Duration
}

func (BestEffort) mode() string { return "best-effort" }
func (LatestOnly) mode() string { return "latest-only" }
func (Reliable) mode() string   { return "reliable" }

// subConfig is what SubscribeOptions set.
type subConfig struct {
	mode     Mode
	types    []string // SubscribeEnvelopes: OfTypes; Subscribe: T's name
	sources  []string
	pred     func(*envelope.View) bool
	workers  int
	retry    *Retry
	fallback bool
}

// SubscribeOption configures a subscription.
type SubscribeOption func(*subConfig)

// Delivery sets the delivery mode (default BestEffort).
func Delivery(m Mode) SubscribeOption { return func(c *subConfig) { c.mode = m } }

// OfTypes keeps only events of these type names, for SubscribeEnvelopes (default: every
// type). Subscribe refuses it: its type is T's.
func OfTypes(names ...string) SubscribeOption {
	return func(c *subConfig) { c.types = append(c.types, names...) }
}

// FromSources keeps only events published by these sources (Config.Source of the
// publishing process).
func FromSources(names ...string) SubscribeOption {
	return func(c *subConfig) { c.sources = append(c.sources, names...) }
}

// Where keeps only events for which pred returns true. It runs on the delivering
// goroutine, with the envelope in place (see the package Caveats), before decoding.
func Where(pred func(*envelope.View) bool) SubscribeOption {
	return func(c *subConfig) { c.pred = pred }
}

// Workers sets how many goroutines of this process handle a Reliable subscription's events
// (default 1); ScaleWorkers changes it later.
func Workers(n int) SubscribeOption { return func(c *subConfig) { c.workers = n } }

// Fallback makes this process's workers of a Reliable subscription a fall-back: they take
// events only while no other process has a live worker of the subscription (a WorkerPool
// whose processes all died, or are restarting). Use it in the publishing process to have
// events handled there when the worker processes are down. Whether others live is looked
// at about every 50 ms (ring.ReadStats of the queue: reader endpoints of live processes).
func Fallback() SubscribeOption { return func(c *subConfig) { c.fallback = true } }

// WithRetry sets a Reliable subscription's retry policy (default Config.Retry).
func WithRetry(r Retry) SubscribeOption { return func(c *subConfig) { c.retry = &r } }

// Handler handles one event: ev is its envelope, v its decoded payload. Both are valid only
// during the call (with a codec.Fixed codec, v points into shared memory). ctx ends when
// the subscription is closed, or at the Reliable Timeout.
type Handler[T any] func(ctx context.Context, ev *envelope.View, v *T) error

// Subscription is a running subscription. Its methods are safe for concurrent use.
type Subscription struct {
	b        *Bus
	cfg      subConfig
	typeName string // for labels: the type names, or "*"
	name     string // Reliable: the queue name; else empty
	retry    Retry
	timeout  time.Duration
	deliver  func() func(ctx context.Context, v *envelope.View) error // one per worker
	ctx      context.Context
	cancel   context.CancelFunc

	mu       sync.Mutex
	workers  []*worker
	wg       sync.WaitGroup // the workers
	watchWG  sync.WaitGroup // the watchdog
	queue    *pubQueue      // Reliable: the queue's segments
	lanes    [envelope.Priorities]*shm.Segment
	stopped  bool
	draining bool // drain has told the workers to stop: no new worker replaces one

	stats      subCounters      // this process's
	m          *deliveryMetrics // shared: the bus set's mode series, or qm's
	qm         *subMetrics      // Reliable: the subscription's set
	lastSample atomic.Int64     // Unix ns of the last sampleQueue

	// Fallback: whether another process had a live worker, looked at othersChecked.
	othersAlive   atomic.Bool
	othersChecked atomic.Int64
	nworkers      atomic.Int32 // worker goroutines running
}

// count adds n to one of this process's counters and to its shared series.
func (s *Subscription) count(local *atomic.Uint64, shared *metrics.Counter, n uint64) {
	local.Add(n)
	shared.Add(n)
}

// worker is one delivering goroutine.
type worker struct {
	l    *lanes
	quit atomic.Bool // stop after the event in hand
	// started is when the handler in progress began (Unix ns), 0 between handler calls,
	// abandoned once the watchdog gave the worker up (see watch).
	started atomic.Int64
	attempt atomic.Uint32 // the attempt in the handler, for the watchdog
	done    chan struct{}
	view    envelope.View
	deliver func(ctx context.Context, v *envelope.View) error
	buf     []byte
}

// Subscribe starts delivering the events of T's registered type that pass the options'
// filters to handler, in this process, until Close or Unsubscribe. It returns once the
// subscription is in place: every event published after it returned is delivered (subject
// to the mode's rules). Errors: ErrNotRegistered, ErrShuttingDown, ErrConfig for bad
// options, ErrRegistryFull, and the errors of opening the segments.
func Subscribe[T any](b *Bus, handler Handler[T], opts ...SubscribeOption) (*Subscription, error) {
	ti, err := lookup[T](b)
	if err != nil {
		return nil, err
	}
	if handler == nil {
		return nil, fmt.Errorf("%w: nil handler", ErrConfig)
	}
	deliver := func() func(ctx context.Context, v *envelope.View) error {
		val := new(T)
		return func(ctx context.Context, ev *envelope.View) error {
			if ti.fixed != nil {
				p, err := ti.fixed.View(ev.Payload())
				if err != nil {
					return err
				}
				return handler(ctx, ev, p)
			}
			if err := ti.codec.Decode(ev.Payload(), val); err != nil {
				return err
			}
			return handler(ctx, ev, val)
		}
	}
	return b.subscribe(ti.name, deliver, opts)
}

// EnvelopeHandler handles one event as its envelope, for infrastructure that forwards
// events without decoding them (the NATS bridge). ev is valid only during the call.
type EnvelopeHandler func(ctx context.Context, ev *envelope.View) error

// SubscribeEnvelopes is Subscribe for events of any type (OfTypes to choose some), handed
// over as envelopes: the same delivery modes, filters, workers and retries. A Reliable
// subscriber acknowledges by returning nil, so a bridge acknowledges after the far side
// did. Errors: as Subscribe's, ErrConfig for more than 16 OfTypes names.
func SubscribeEnvelopes(b *Bus, handler EnvelopeHandler, opts ...SubscribeOption) (*Subscription, error) {
	if handler == nil {
		return nil, fmt.Errorf("%w: nil handler", ErrConfig)
	}
	deliver := func() func(ctx context.Context, v *envelope.View) error { return handler }
	return b.subscribe("", deliver, opts)
}

// subscribe starts a subscription to typeName (empty: the types of OfTypes, or every type).
func (b *Bus) subscribe(typeName string, deliver func() func(context.Context, *envelope.View) error, opts []SubscribeOption) (*Subscription, error) {
	if b.closing.Load() {
		return nil, ErrShuttingDown
	}
	cfg := subConfig{mode: BestEffort{}, workers: 1}
	for _, o := range opts {
		o(&cfg)
	}
	if typeName != "" {
		if len(cfg.types) > 0 {
			return nil, fmt.Errorf("%w: OfTypes is for SubscribeEnvelopes; Subscribe's type is %s", ErrConfig, typeName)
		}
		cfg.types = []string{typeName}
	}
	if len(cfg.types) > maxFilter {
		return nil, fmt.Errorf("%w: %d types, at most %d", ErrConfig, len(cfg.types), maxFilter)
	}
	typeName = strings.Join(cfg.types, ",")
	if typeName == "" {
		typeName = "*"
	}
	if cfg.mode == nil {
		cfg.mode = BestEffort{}
	}
	if _, ok := cfg.mode.(Reliable); cfg.fallback && !ok {
		return nil, fmt.Errorf("%w: Fallback of a %s subscription", ErrConfig, cfg.mode.mode())
	}
	if cfg.workers < 1 {
		return nil, fmt.Errorf("%w: %d workers", ErrConfig, cfg.workers)
	}
	if len(cfg.sources) > maxFilter {
		return nil, fmt.Errorf("%w: %d sources, at most %d", ErrConfig, len(cfg.sources), maxFilter)
	}
	s := &Subscription{b: b, cfg: cfg, typeName: typeName, deliver: deliver, retry: b.cfg.Retry}
	if cfg.retry != nil {
		if err := cfg.retry.validate(); err != nil {
			return nil, err
		}
		s.retry = *cfg.retry
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	var err error
	switch m := cfg.mode.(type) {
	case BestEffort, LatestOnly:
		s.m = b.metrics.modes[m.mode()]
		err = s.startLanes()
	case Reliable:
		if !validSubName(m.Name) {
			err = fmt.Errorf("%w: Reliable.Name %q is not 1 to %d bytes of [A-Za-z0-9_-]", ErrConfig, m.Name, maxSubName)
			break
		}
		if m.Timeout < 0 {
			err = fmt.Errorf("%w: Reliable.Timeout %v is negative", ErrConfig, m.Timeout)
			break
		}
		s.name, s.timeout = m.Name, m.Timeout
		err = s.startReliable()
	default:
		err = fmt.Errorf("%w: unknown mode %T", ErrConfig, m)
	}
	if err != nil {
		s.cancel()
		s.release()
		return nil, err
	}
	b.subsMu.Lock()
	b.subs[s] = struct{}{}
	b.subsMu.Unlock()
	return s, nil
}

func validSubName(n string) bool {
	if n == "" || len(n) > maxSubName {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// match applies the subscription's filters to an envelope.
func (s *Subscription) match(v *envelope.View) bool {
	if len(s.cfg.types) > 0 {
		ok := false
		for _, t := range s.cfg.types {
			if v.IsType(t) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(s.cfg.sources) > 0 {
		ok := false
		for _, src := range s.cfg.sources {
			if string(v.Source()) == src {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return s.cfg.pred == nil || s.cfg.pred(v)
}

// startLanes subscribes to the best-effort lane topics and starts the one goroutine of a
// BestEffort or LatestOnly subscription.
func (s *Subscription) startLanes() error {
	var rs [envelope.Priorities]ring.Reader
	for p := range envelope.Priorities {
		seg, err := shm.Open(laneName(s.b.name, envelope.Priority(p)), s.b.opts)
		if err != nil {
			closeReaders(rs)
			return err
		}
		s.lanes[p] = seg
		sub, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{Start: ring.FromLatest})
		if err != nil {
			closeReaders(rs)
			return err
		}
		rs[p] = sub
	}
	w := &worker{l: newLanes(rs, s.b.cfg.Weights), done: make(chan struct{}), deliver: s.deliver(), buf: make([]byte, s.b.cfg.MaxEvent)}
	s.workers = append(s.workers, w)
	s.wg.Add(1)
	if _, latest := s.cfg.mode.(LatestOnly); latest {
		go s.runLatest(w)
	} else {
		go s.runBestEffort(w)
	}
	return nil
}

func closeReaders(rs [envelope.Priorities]ring.Reader) {
	for _, r := range rs {
		if r != nil {
			r.Close()
		}
	}
}

// startReliable opens the subscription's queue, starts its workers, then registers it so
// that publishers queue for it.
func (s *Subscription) startReliable() error {
	var types, sources []uint32
	for _, t := range s.cfg.types {
		types = append(types, envelope.TypeID(t))
	}
	for _, src := range s.cfg.sources {
		sources = append(sources, envelope.TypeID(src))
	}
	e := subEntry{name: s.name, types: types, sources: sources, created: time.Now().UnixNano()}
	q, err := s.b.openQueue(e, false)
	if err != nil {
		return err
	}
	s.queue = q
	if s.qm, err = openSubMetrics(s.b.name, s.name, s.b.opts); err != nil {
		return err
	}
	s.m = &s.qm.deliveryMetrics
	for range s.cfg.workers {
		if err := s.addWorker(); err != nil {
			return err
		}
	}
	if s.timeout > 0 { // after the workers: addWorker runs without s.mu until s is shared
		s.watchWG.Add(1)
		go s.watch()
	}
	return s.b.reg.add(e)
}

// addWorker starts one Reliable worker goroutine. Called with s.mu held or before s is
// shared.
func (s *Subscription) addWorker() error {
	var rs [envelope.Priorities]ring.Reader
	for p := range envelope.Priorities {
		r, err := ring.NewMPMCReader(s.queue.segs[p], ring.Options{})
		if err != nil {
			closeReaders(rs)
			return err
		}
		rs[p] = r
	}
	w := &worker{l: newLanes(rs, s.b.cfg.Weights), done: make(chan struct{}), deliver: s.deliver()}
	s.workers = append(s.workers, w)
	s.nworkers.Add(1)
	s.wg.Add(1)
	go s.runReliable(w)
	return nil
}

// idleWait is how long a worker sleeps without an event before looking again (at dead
// peers' records, at its stop flag).
const idleWait = 100 * time.Millisecond

// runBestEffort is a BestEffort subscription's goroutine: it copies each event out of the
// lane (the lane may be overwritten under it), validates the copy, and hands it over.
func (s *Subscription) runBestEffort(w *worker) {
	defer s.wg.Done()
	defer close(w.done)
	defer w.l.close()
	for {
		sv := w.l.stopValue()
		if w.quit.Load() {
			return
		}
		rec, p, err := w.l.next()
		if err == errIdle {
			w.l.wait(sv, idleWait)
			continue
		}
		if err != nil {
			s.countReadError(err)
			continue
		}
		n := copy(w.buf, rec.Data)
		verr := w.l.rs[p].(*ring.Subscriber).Validate()
		w.l.rs[p].Release()
		if verr != nil {
			s.countReadError(verr)
			continue
		}
		s.handleOnce(w, w.buf[:n])
	}
}

// handleOnce parses, filters and delivers an event copied out of a lane; the handler's
// error is counted, not retried.
func (s *Subscription) handleOnce(w *worker, b []byte) {
	var err error
	if w.view, err = envelope.Parse(b); err != nil {
		s.count(&s.stats.malformed, s.m.malformed, 1)
		return
	}
	if !s.match(&w.view) {
		return
	}
	start := time.Now()
	w.started.Store(start.UnixNano())
	err = w.deliver(s.ctx, &w.view)
	w.started.Store(0)
	s.m.observe(&s.stats, s.b.cfg.SlowHandler, &w.view, start, err)
}

// countReadError counts what a lane read reports: missed events (a *ring.LagError) as drops.
func (s *Subscription) countReadError(err error) {
	var lag *ring.LagError
	if errors.As(err, &lag) {
		// What the lane overwrote unread, of every type: whether the subscription wanted
		// them is not known any more.
		s.count(&s.stats.dropped, s.m.dropped, lag.Missed)
		return
	}
	s.count(&s.stats.malformed, s.m.malformed, 1)
}

// latestSlot is the newest event of one type, held by a LatestOnly subscription.
type latestSlot struct {
	typ  uint32
	buf  []byte
	n    int
	have bool
}

// runLatest is a LatestOnly subscription's goroutine: it takes everything the lanes hold,
// keeps the newest event of each type, and delivers those.
func (s *Subscription) runLatest(w *worker) {
	defer s.wg.Done()
	defer close(w.done)
	defer w.l.close()
	var slots []*latestSlot
	find := func(typ uint32) *latestSlot {
		for _, sl := range slots {
			if sl.typ == typ {
				return sl
			}
		}
		sl := &latestSlot{typ: typ, buf: make([]byte, s.b.cfg.MaxEvent)}
		slots = append(slots, sl)
		return sl
	}
	for {
		sv := w.l.stopValue()
		if w.quit.Load() {
			return
		}
		got := false
		for {
			rec, p, err := w.l.next()
			if err == errIdle {
				break
			}
			if err != nil {
				s.countReadError(err)
				continue
			}
			n := copy(w.buf, rec.Data)
			verr := w.l.rs[p].(*ring.Subscriber).Validate()
			w.l.rs[p].Release()
			if verr != nil {
				s.countReadError(verr)
				continue
			}
			// Only events the subscription takes replace one another (and count as conflated).
			if w.view, err = envelope.Parse(w.buf[:n]); err != nil {
				s.count(&s.stats.malformed, s.m.malformed, 1)
				continue
			}
			if !s.match(&w.view) {
				continue
			}
			sl := find(rec.Type)
			if sl.have {
				s.count(&s.stats.conflated, s.m.conflated, 1)
			}
			sl.n = copy(sl.buf, w.buf[:n])
			sl.have, got = true, true
		}
		if !got {
			w.l.wait(sv, idleWait)
			continue
		}
		for _, sl := range slots {
			if sl.have {
				sl.have = false
				s.handleOnce(w, sl.buf[:sl.n])
			}
		}
	}
}

// runReliable is a Reliable worker: it borrows each event from the queue in place, runs the
// handler with retries, and releases the event (the acknowledgement) only after success or
// dead-lettering.
func (s *Subscription) runReliable(w *worker) {
	defer func() {
		w.l.close()
		close(w.done)
		if w.started.Load() != abandoned { // else the watchdog accounted for it
			s.nworkers.Add(-1)
			s.wg.Done()
		}
	}()
	for {
		sv := w.l.stopValue()
		if w.quit.Load() {
			return
		}
		if s.cfg.fallback && s.othersWork() {
			// No Maintain either: it would adopt a dead worker's event, to hold it here.
			w.l.pause(sv, fallbackCheck)
			continue
		}
		rec, p, err := w.l.next()
		if err == errIdle {
			w.l.maintain()
			s.sample()
			w.l.wait(sv, idleWait)
			continue
		}
		if err != nil {
			s.count(&s.stats.malformed, s.m.malformed, 1)
			continue
		}
		if s.handleReliable(w, rec, p) {
			// Before the release: a worker that dies between the two counts too little,
			// never too much (see Bus.enqueue).
			s.qm.bytes.Add(-int64(len(rec.Data)))
			w.l.rs[p].Release()
			s.sample()
		} else {
			return // the subscription closes: the event stays borrowed, to be delivered again
		}
	}
}

// handleReliable runs the handler on a borrowed event until it succeeds or is dead-lettered
// (true: release it), or the subscription is closed or the watchdog abandoned the worker
// meanwhile (false: leave it borrowed).
func (s *Subscription) handleReliable(w *worker, rec ring.Record, p int) bool {
	var err error
	if w.view, err = envelope.Parse(rec.Data); err != nil {
		s.count(&s.stats.malformed, s.m.malformed, 1)
		return s.deadLetter(rec, p, err, 0)
	}
	if !s.match(&w.view) {
		return true
	}
	attempt := max(w.view.Attempt, 1)
	if int(attempt) > s.retry.MaxAttempts {
		// Its last attempt's worker died or was abandoned: no attempt is left.
		return s.deadLetter(rec, p, errLastAttemptLost, attempt-1)
	}
	for {
		// Before the handler runs: if this process dies now, the event comes back as the next
		// attempt, so an event that kills its workers ends in the dead-letter queue.
		_ = envelope.SetAttempt(rec.Data, attempt+1)
		w.view.Attempt = attempt
		start := time.Now()
		w.attempt.Store(attempt)
		w.started.Store(start.UnixNano())
		err = s.call(w)
		if !w.started.CompareAndSwap(start.UnixNano(), 0) {
			return false // abandoned by the watchdog: the event went to another worker
		}
		if err == nil && s.timeout > 0 && time.Since(start) > s.timeout {
			err = ErrDeliveryTimeout
		}
		s.m.observe(&s.stats, s.b.cfg.SlowHandler, &w.view, start, err)
		if err == nil {
			return true
		}
		if int(attempt) >= s.retry.MaxAttempts {
			return s.deadLetter(rec, p, err, attempt)
		}
		s.count(&s.stats.retried, s.m.retried, 1)
		if !s.sleep(s.retry.delay(int(attempt))) {
			return false
		}
		attempt++
	}
}

// abandoned is worker.started of a worker the watchdog gave up.
const abandoned = -1

// errLastAttemptLost is the dead-letter cause of an event whose last attempt ended with its
// worker: the process died, or the watchdog abandoned the handler.
var errLastAttemptLost = errors.New("bus: the worker of the last attempt died or hung")

// watch is the watchdog of a Reliable subscription with a Timeout: a handler that ignores
// its ctx and has not returned 2×Timeout after it began (at least Timeout + 10 ms) has its
// worker abandoned: the attempt counts as failed (ErrDeliveryTimeout), the worker's
// readers are closed so that its event goes to another worker as the next attempt, and a
// new worker takes its place. The abandoned goroutine stays blocked in the handler until
// it returns, then ends without touching the queue; Close does not wait for it.
func (s *Subscription) watch() {
	defer s.watchWG.Done()
	grace := max(s.timeout, 10*time.Millisecond)
	tick := time.NewTicker(min(max(s.timeout/4, time.Millisecond), 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now().UnixNano()
		s.mu.Lock()
		for i := 0; i < len(s.workers); i++ {
			w := s.workers[i]
			st := w.started.Load()
			if st <= 0 || now-st <= int64(s.timeout+grace) || !w.started.CompareAndSwap(st, abandoned) {
				continue
			}
			s.count(&s.stats.failed, s.m.failed, 1)
			s.count(&s.stats.timeouts, s.m.timeouts, 1)
			s.count(&s.stats.abandoned, nil, 1)
			if int(w.attempt.Load()) < s.retry.MaxAttempts {
				s.count(&s.stats.retried, s.m.retried, 1) // the next worker makes the next attempt
			}
			w.l.close() // the borrowed event goes back to the queue
			s.workers = append(s.workers[:i], s.workers[i+1:]...)
			i--
			s.nworkers.Add(-1)
			s.wg.Done() // the goroutine's: Close must not wait for a handler that hangs
			if !s.stopped && !s.draining {
				_ = s.addWorker()
			}
		}
		s.mu.Unlock()
	}
}

// call runs the handler, under the Timeout if there is one.
func (s *Subscription) call(w *worker) error {
	if s.timeout <= 0 {
		return w.deliver(s.ctx, &w.view)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	err := w.deliver(ctx, &w.view)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && s.ctx.Err() == nil {
		err = fmt.Errorf("%w: %w", ErrDeliveryTimeout, err)
	}
	return err
}

// fallbackCheck is how often a Fallback subscription looks whether other processes have
// live workers.
const fallbackCheck = 50 * time.Millisecond

// othersWork reports whether a process other than this one has a live worker of the
// subscription: reader endpoints of live processes on the Critical lane beyond this
// subscription's own workers. Refreshed at most every fallbackCheck.
func (s *Subscription) othersWork() bool {
	now := time.Now().UnixNano()
	last := s.othersChecked.Load()
	if now-last < int64(fallbackCheck) || !s.othersChecked.CompareAndSwap(last, now) {
		return s.othersAlive.Load()
	}
	st, err := ring.ReadStats(s.queue.segs[envelope.Critical])
	alive := err == nil && st.ReadersOpen > int(s.nworkers.Load())
	s.othersAlive.Store(alive)
	return alive
}

// sample refreshes the queue's sampled gauges if no worker of this process did for
// sampleEvery.
func (s *Subscription) sample() {
	now := time.Now().UnixNano()
	last := s.lastSample.Load()
	if now-last < int64(sampleEvery) || !s.lastSample.CompareAndSwap(last, now) {
		return
	}
	sampleQueue(s.queue.segs, s.qm)
}

// sleep waits d, or until the subscription closes (false).
func (s *Subscription) sleep(d time.Duration) bool {
	if d <= 0 {
		return s.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// ScaleWorkers sets the number of this process's worker goroutines of a Reliable
// subscription to n (at least 1). Added workers start at once; removed ones stop after the
// event in hand, so no event is lost or handled twice by the change. It returns once the
// removed workers have stopped. ErrConfig for n < 1 or a subscription that is not Reliable;
// ErrSubscriberUnavailable after Close.
func (s *Subscription) ScaleWorkers(n int) error {
	if _, ok := s.cfg.mode.(Reliable); !ok || n < 1 {
		return fmt.Errorf("%w: ScaleWorkers(%d) of a %s subscription", ErrConfig, n, s.cfg.mode.mode())
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return ErrSubscriberUnavailable
	}
	for len(s.workers) < n {
		if err := s.addWorker(); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	var gone []*worker
	for len(s.workers) > n {
		w := s.workers[len(s.workers)-1]
		s.workers = s.workers[:len(s.workers)-1]
		w.quit.Store(true)
		w.l.wake()
		gone = append(gone, w)
	}
	s.mu.Unlock()
	for _, w := range gone {
		<-w.done
	}
	return nil
}

// Close stops the subscription in this process: no handler starts after it returns, and it
// waits for the handlers running (their ctx is cancelled). A Reliable subscription stays:
// publishers keep queueing for it, and an event a handler was retrying is delivered again
// to the next worker. Safe to call any number of times.
func (s *Subscription) Close() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.stopped = true
	for _, w := range s.workers {
		w.quit.Store(true)
		w.l.wake()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.watchWG.Wait()
	s.release()
	s.b.subsMu.Lock()
	delete(s.b.subs, s)
	s.b.subsMu.Unlock()
	return nil
}

// drain stops the subscription's workers after the events in hand, waiting until ctx
// ends; then it closes like Close. It reports whether every worker stopped in time.
func (s *Subscription) drain(ctx context.Context) bool {
	s.mu.Lock()
	s.draining = true
	for _, w := range s.workers {
		w.quit.Store(true)
		w.l.wake()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	ok := true
	select {
	case <-done:
	case <-ctx.Done():
		ok = false
	}
	s.Close()
	return ok
}

// Unsubscribe closes the subscription and, for a Reliable one, removes it from the bus:
// publishers stop queueing for it and its queue and metrics set are deleted with what they
// held (other processes' workers of the same name stop receiving). Safe to call any number of times.
func (s *Subscription) Unsubscribe() error {
	s.Close()
	if s.name == "" {
		return nil
	}
	if _, err := s.b.reg.remove(s.name); err != nil {
		return err
	}
	var errs error
	names := []string{subMetricsName(s.b.name, s.name)}
	for p := range envelope.Priorities {
		names = append(names, queueName(s.b.name, s.name, envelope.Priority(p)))
	}
	for _, n := range names {
		if err := shm.Remove(n, s.b.opts); err != nil && !errors.Is(err, shm.ErrNotExist) {
			errs = errors.Join(errs, err)
		}
	}
	return errs
}

func (s *Subscription) release() {
	s.qm.close()
	if s.queue != nil {
		s.queue.close()
		s.queue = nil
	}
	for p, seg := range s.lanes {
		if seg != nil {
			seg.Close()
			s.lanes[p] = nil
		}
	}
}
