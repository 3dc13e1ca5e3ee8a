// Package loop is an event loop: one goroutine serves many ring readers (SPSC, MPMC and
// topic subscribers, through ring.Reader), timers, and tasks posted from other goroutines.
//
// Asleep, the whole loop costs one kernel wait: futex_waitv (futex.WaitV, Linux 5.16+) on
// the wake-up word of every reader (ring.Reader.Arm) and on the loop's own doorbell, which
// Post, timers added from other goroutines and Stop ring. futex_waitv takes up to 128
// words: the first 127 readers are waited on, and with more the loop also wakes every
// millisecond to poll the rest. Where futex_waitv is missing (older kernels, other systems)
// a Futex or Adaptive loop polls every millisecond instead. The alternative, a doorbell word
// in every ring that its writers would also ring, would need every writer to know the
// loops reading it, in shared memory; futex_waitv needs nothing from the rings.
//
// Handlers run on the loop's goroutine, records in place (valid during the call). A
// handler's error or panic is reported to Options.OnError and the record is counted as
// rejected (ring.Reject); a batch of handler calls slower than Options.Slow is reported to
// Options.OnSlow; neither stops the loop.
package loop

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/futex"
	"github.com/shmq/shmq/ring"
)

// ErrStopped is returned by Post, Add and timers once Stop was called.
var ErrStopped = errors.New("loop stopped")

// Options configures a Loop. The zero value is a loop with the default (adaptive) wait
// that logs handler errors and panics.
type Options struct {
	// Wait is how the loop waits when nothing is ready: ring.Spin, ring.Sleep(d),
	// ring.Futex or ring.Adaptive (spin for a while, then sleep in the kernel).
	Wait ring.Wait
	// Batch bounds the records handled from one reader per turn, so that a busy reader does
	// not starve the others. Zero means 64.
	Batch int
	// OnError is told of every handler error or panic (a *PanicError), and of reader
	// errors that do not end the reader (a *ring.LagError). It runs on the loop's
	// goroutine. Nil logs them.
	OnError func(src *Source, err error)
	// Slow and OnSlow report a turn in which one reader's handlers took longer than Slow
	// (zero: never). OnSlow runs on the loop's goroutine.
	Slow   time.Duration
	OnSlow func(src *Source, took time.Duration, records int)
	// Check is how often the loop runs Maintain on readers with nothing to read, which is
	// how it learns that their writers died (ring.ErrPeerDead, two checks in a row) and how
	// MPMC readers repair what dead peers left. It also bounds a kernel sleep (a wake-up a
	// ring lost costs at most this). Zero means one second: an idle loop over 100 rings
	// then costs about 0.05% of a core (each check lists every ring's peer table), and a
	// writer's death reaches onEnd within about two seconds. Lower it for faster notice.
	Check time.Duration
}

// PanicError is a handler's panic, reported to Options.OnError.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

// Loop serves readers, timers and posted tasks on the goroutine that calls Run. Every
// method except Run may be called from any goroutine.
type Loop struct {
	opts Options

	mode     string        // the wait strategy's name, taken once
	waitFor  time.Duration // its parameter
	waitv    bool          // futex_waitv works here (cleared by its first failure)
	maintain time.Duration // Options.Check

	mu      sync.Mutex
	posted  []func()
	timers  timerHeap
	sources []*Source
	changed bool // sources changed since the loop last took them
	stopped bool
	state   int // notRun, running, ran

	bell     uint32      // rung (incremented, then woken) by Post, AfterFunc, Add and Stop
	sleeping atomic.Bool // the loop may be asleep on bell

	// Loop goroutine only.
	active       []*Source
	tasks        []func()
	words        []*uint32
	vals         []uint32
	armed        []*Source
	done         context.Context // already cancelled: Drain never waits
	lastMaintain time.Time
}

// New returns a loop; Run runs it.
func New(opts Options) *Loop {
	if opts.Batch <= 0 {
		opts.Batch = 64
	}
	if opts.Check <= 0 {
		opts.Check = time.Second
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	return &Loop{opts: opts, done: done, mode: opts.Wait.Name(), waitFor: opts.Wait.Duration(),
		waitv: futex.Supported, maintain: opts.Check}
}

// Source is a reader registered with a loop.
type Source struct {
	loop    *Loop
	r       ring.Reader
	handler func(ring.Record) error
	onEnd   func(error)
	fn      func(ring.Record) error // handler wrapped: errors and panics reported, never returned
	removed atomic.Bool
	gone    chan struct{} // closed once the loop no longer uses the reader (after Remove)
	goneMu  sync.Once
	ended   bool // loop goroutine only
	calls   int  // handler calls, loop goroutine only
}

// Reader is the source's reader.
func (s *Source) Reader() ring.Reader { return s.r }

// Add registers r: handler is called on the loop's goroutine for each record, in place.
// onEnd, if not nil, is called once on the loop's goroutine when the reader ends (its error:
// io.EOF at the end of a stream, ring.ErrPeerDead within about two Options.Check intervals
// of its writers' death, ring.ErrClosed, ring.ErrCorrupt); the source is removed then. To
// dispatch by message type, pass a codec.Mux's Dispatch. The reader belongs to the loop
// until Remove's channel is closed.
func (l *Loop) Add(r ring.Reader, handler func(ring.Record) error, onEnd func(error)) (*Source, error) {
	s := &Source{loop: l, r: r, handler: handler, onEnd: onEnd, gone: make(chan struct{})}
	s.fn = s.call
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return nil, ErrStopped
	}
	l.sources = append(l.sources, s)
	l.changed = true
	l.mu.Unlock()
	l.ring()
	return s, nil
}

// Remove unregisters the source: its handler and onEnd are not called once Remove has
// returned (a batch in progress stops before its next record), and the returned channel is
// closed once the loop no longer touches the reader, which is then the caller's again (it
// is not closed). Safe from any goroutine and from a handler, which must not wait on the
// channel (the loop closes it after the handler's turn).
func (s *Source) Remove() <-chan struct{} {
	l := s.loop
	l.mu.Lock()
	if !s.removed.Swap(true) {
		l.changed = true
		if l.state != running {
			s.handBack() // no loop touches it
		}
	}
	l.mu.Unlock()
	l.ring()
	return s.gone
}

// handBack closes the channel Remove returned, once.
func (s *Source) handBack() { s.goneMu.Do(func() { close(s.gone) }) }

// errRemoved stops a batch of a source removed meanwhile: Drain keeps the record for the
// reader's next owner.
var errRemoved = errors.New("loop source removed")

// call runs the handler, turning an error or a panic into a report and a rejected record.
func (s *Source) call(rec ring.Record) (err error) {
	if s.removed.Load() {
		return errRemoved
	}
	s.calls++
	defer func() {
		if v := recover(); v != nil {
			err = s.loop.report(s, &PanicError{Value: v, Stack: debug.Stack()})
		}
	}()
	if err := s.handler(rec); err != nil {
		return s.loop.report(s, err)
	}
	return nil
}

// report hands err to OnError (a panic there is logged, not propagated) and returns it as
// a rejection, so that Drain counts the record and goes on.
func (l *Loop) report(s *Source, err error) error {
	func() {
		defer func() {
			if v := recover(); v != nil {
				log.Printf("shmq loop: OnError panicked on %v: %v", err, v)
			}
		}()
		if l.opts.OnError != nil {
			l.opts.OnError(s, err)
		} else {
			log.Printf("shmq loop: %v", err)
		}
	}()
	return ring.Reject(err)
}

// Post queues fn to run on the loop's goroutine, in order, and wakes the loop.
func (l *Loop) Post(fn func()) error {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return ErrStopped
	}
	l.posted = append(l.posted, fn)
	l.mu.Unlock()
	l.ring()
	return nil
}

// ring wakes the loop if it may be asleep. The increment comes before the load of
// sleeping, and the loop stores sleeping before it looks at the queues and loads bell's
// value to wait on: either the loop sees the change, or it waits on the old value and the
// kernel refuses the sleep, or this wakes it.
func (l *Loop) ring() {
	atomic.AddUint32(&l.bell, 1)
	if l.sleeping.Load() {
		_, _ = futex.Wake(&l.bell, 1)
	}
}

// Stop makes Run return after its current turn and the tasks posted before Stop. Safe from
// any goroutine (a handler included), any number of times.
func (l *Loop) Stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	l.ring()
}

// ErrRunning is returned by a second Run of a loop.
var ErrRunning = errors.New("loop is running or has run")

// Run serves the loop on the calling goroutine until Stop (it returns nil) or until ctx
// ends (ctx's error); a loop runs once (ErrRunning), and is stopped when Run returns.
// Readers are neither closed nor released by it.
func (l *Loop) Run(ctx context.Context) error {
	l.mu.Lock()
	if l.state != notRun {
		l.mu.Unlock()
		return ErrRunning
	}
	l.state = running
	l.mu.Unlock()
	defer l.finish()
	defer context.AfterFunc(ctx, l.ring)()
	var spinStart time.Time
	for {
		stopped := l.takeChanges()
		progress := l.runTasks()
		progress = l.runTimers() || progress
		if stopped {
			l.runTasks() // those posted before Stop
			return nil
		}
		progress = l.serve() || progress
		if err := ctx.Err(); err != nil {
			return err
		}
		l.maintainIdle()
		if progress {
			spinStart = time.Time{}
			continue
		}
		if spinStart.IsZero() {
			spinStart = time.Now()
		}
		l.idle(ctx, spinStart)
	}
}

// Run states.
const (
	notRun = iota
	running
	ran
)

// finish marks the loop stopped when Run returns, and hands every reader back.
func (l *Loop) finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped, l.state = true, ran
	for _, s := range l.sources {
		if s.removed.Load() {
			s.handBack()
		}
	}
	l.sources, l.active = nil, nil
}

// takeChanges picks up added and removed sources and reports whether Stop was called. A
// removed source's channel closes here, at the start of a turn: the loop is done with it.
func (l *Loop) takeChanges() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed {
		l.changed = false
		l.active = l.active[:0]
		kept := l.sources[:0]
		for _, s := range l.sources {
			switch {
			case s.removed.Load():
				s.handBack()
			case !s.ended:
				kept = append(kept, s)
				l.active = append(l.active, s)
			}
		}
		clear(l.sources[len(kept):])
		clear(l.active[len(l.active):cap(l.active)])
		l.sources = kept
	}
	return l.stopped
}

func (l *Loop) runTasks() bool {
	l.mu.Lock()
	l.tasks, l.posted = l.posted, l.tasks[:0]
	l.mu.Unlock()
	for i, fn := range l.tasks {
		l.tasks[i] = nil
		l.runTask(fn)
	}
	return len(l.tasks) > 0
}

// runTask runs a posted task or timer, reporting a panic (with a nil source).
func (l *Loop) runTask(fn func()) { l.runTaskOf(nil, fn) }

// runTaskOf runs fn for source s (an onEnd), reporting a panic with s.
func (l *Loop) runTaskOf(s *Source, fn func()) {
	defer func() {
		if v := recover(); v != nil {
			_ = l.report(s, &PanicError{Value: v, Stack: debug.Stack()})
		}
	}()
	fn()
}

// serve drains every ready reader once, up to Batch records each.
func (l *Loop) serve() bool {
	progress := false
	for _, s := range l.active {
		if s.ended || s.removed.Load() || !s.r.Ready() {
			continue
		}
		var start time.Time
		if l.opts.Slow > 0 {
			start = time.Now()
		}
		calls := s.calls
		_, err := s.r.Drain(l.done, s.fn, l.opts.Batch)
		if s.calls > calls {
			progress = true // rejected records count: the reader is busy
		}
		if l.opts.Slow > 0 {
			if took := time.Since(start); took > l.opts.Slow && l.opts.OnSlow != nil {
				l.runTask(func() { l.opts.OnSlow(s, took, s.calls-calls) })
			}
		}
		switch {
		case s.removed.Load():
			// Removed meanwhile (errRemoved, or ErrClosed from a reader closed after Remove).
		case err == nil || errors.Is(err, context.Canceled):
			// Canceled: another reader took what was ready (MPMC).
		case errors.Is(err, ring.ErrLagged):
			progress = true
			_ = l.report(s, err)
		default:
			progress = true
			l.end(s, err)
		}
	}
	return progress
}

// end removes a reader that returned a final error and tells its onEnd.
func (l *Loop) end(s *Source, err error) {
	s.ended = true
	l.mu.Lock()
	l.changed = true
	l.mu.Unlock()
	if s.onEnd != nil && !s.removed.Load() {
		l.runTaskOf(s, func() { s.onEnd(err) })
	}
}

// maintainIdle runs Maintain, about every Options.Check, on the readers with nothing to
// read: the liveness checks and repairs a reader blocked in Next would make.
func (l *Loop) maintainIdle() {
	now := time.Now()
	if now.Sub(l.lastMaintain) < l.maintain {
		return
	}
	l.lastMaintain = now
	for _, s := range l.active {
		if s.ended || s.removed.Load() || s.r.Ready() {
			continue
		}
		if err := s.r.Maintain(); err != nil && !s.removed.Load() {
			l.end(s, err)
		}
	}
}

// idle waits, by the loop's strategy, for something to do.
func (l *Loop) idle(ctx context.Context, spinStart time.Time) {
	timeout := time.Duration(-1)
	l.mu.Lock()
	if len(l.timers) > 0 {
		timeout = max(time.Until(l.timers[0].when), 0)
	}
	l.mu.Unlock()
	if timeout == 0 {
		return
	}
	switch {
	case l.mode == "spin":
		runtime.Gosched()
		return
	case l.mode == "sleep":
		d := l.waitFor
		if timeout >= 0 {
			d = min(d, timeout)
		}
		l.sleep(ctx, d, false) // polling: woken early only by the doorbell
		return
	case l.mode == "adaptive" && time.Since(spinStart) < l.waitFor:
		runtime.Gosched()
		return
	}
	l.sleep(ctx, timeout, true)
}

// pollInterval is how often a sleeping loop polls what it cannot wait on: readers past the
// 127th, or all of them without futex_waitv.
const pollInterval = time.Millisecond

// sleep waits on the doorbell and, with arm, on every reader's armed word, until one
// changes, the next timer is due, or Options.Check passes (Run rings the doorbell when its
// context ends). What rings the doorbell is looked at after the doorbell's value is taken (posted
// tasks, sources changed, Stop, a timer now due, the context), so a ring in between makes
// the kernel refuse the sleep or is seen here.
func (l *Loop) sleep(ctx context.Context, timeout time.Duration, arm bool) {
	if timeout < 0 || timeout > l.maintain {
		timeout = l.maintain
	}
	l.sleeping.Store(true)
	defer l.sleeping.Store(false)
	bell := atomic.LoadUint32(&l.bell)
	l.mu.Lock()
	pending := len(l.posted) > 0 || l.changed || l.stopped
	if len(l.timers) > 0 {
		due := time.Until(l.timers[0].when)
		pending = pending || due <= 0
		timeout = min(timeout, max(due, time.Microsecond))
	}
	l.mu.Unlock()
	if pending || ctx.Err() != nil {
		return
	}
	if !arm || !l.waitv {
		if arm {
			timeout = min(timeout, pollInterval) // no futex_waitv: poll the readers, unarmed (writers pay no wake-up)
		}
		if err := futex.Wait(&l.bell, bell, timeout); errors.Is(err, futex.ErrNotSupported) {
			time.Sleep(timeout)
		}
		return
	}
	l.words, l.vals, l.armed = append(l.words[:0], &l.bell), append(l.vals[:0], bell), l.armed[:0]
	defer func() {
		for _, s := range l.armed {
			s.r.Disarm()
		}
		clear(l.armed)
	}()
	for i, s := range l.active {
		if s.ended || s.removed.Load() {
			continue
		}
		if i >= futex.MaxWaitV-1 {
			timeout = min(timeout, pollInterval)
			break
		}
		w, armed, err := s.r.Arm()
		if err != nil || !armed {
			return // ready (or closed): serve it
		}
		l.armed = append(l.armed, s)
		l.words, l.vals = append(l.words, w.Word), append(l.vals, w.Value)
	}
	if _, err := futex.WaitV(l.words, l.vals, timeout); err != nil && !errors.Is(err, futex.ErrTimeout) {
		// Not supported by the kernel, refused by a seccomp policy, or failing otherwise:
		// poll from now on.
		l.waitv = false
	}
}

// Timer is a function the loop runs at a time, once or periodically.
type Timer struct {
	loop  *Loop
	when  time.Time
	every time.Duration
	fn    func()
	index int // in the heap; -1 when not scheduled
}

// AfterFunc runs fn on the loop's goroutine once d has passed. ErrStopped after Stop.
func (l *Loop) AfterFunc(d time.Duration, fn func()) (*Timer, error) { return l.schedule(d, 0, fn) }

// Every runs fn on the loop's goroutine every d (at least 1µs), the first time after d.
func (l *Loop) Every(d time.Duration, fn func()) (*Timer, error) {
	d = max(d, time.Microsecond)
	return l.schedule(d, d, fn)
}

func (l *Loop) schedule(d, every time.Duration, fn func()) (*Timer, error) {
	t := &Timer{loop: l, when: time.Now().Add(d), every: every, fn: fn}
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return nil, ErrStopped
	}
	heap.Push(&l.timers, t)
	l.mu.Unlock()
	l.ring()
	return t, nil
}

// Stop cancels the timer: fn does not run again after the loop's current turn.
func (t *Timer) Stop() {
	l := t.loop
	l.mu.Lock()
	if t.index >= 0 {
		heap.Remove(&l.timers, t.index)
	}
	l.mu.Unlock()
}

// runTimers runs the timers that are due.
func (l *Loop) runTimers() bool {
	ran := false
	now := time.Now() // once: a periodic timer slower than its period waits for the next turn
	for {
		l.mu.Lock()
		if len(l.timers) == 0 || l.timers[0].when.After(now) {
			l.mu.Unlock()
			return ran
		}
		t := heap.Pop(&l.timers).(*Timer)
		if t.every > 0 {
			t.when = t.when.Add(t.every)
			if t.when.Before(now) {
				t.when = now.Add(t.every) // fell behind: skip the missed ticks
			}
			heap.Push(&l.timers, t)
		}
		l.mu.Unlock()
		ran = true
		l.runTask(t.fn)
	}
}

// timerHeap orders timers by when.
type timerHeap []*Timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].when.Before(h[j].when) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*Timer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*h = old[:len(old)-1]
	return t
}
