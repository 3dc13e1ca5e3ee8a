package ring

import (
	"context"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/futex"
)

// Wait says how an endpoint waits: a reader for data, a writer for room. Choose it per
// endpoint with Options.Wait; the zero value is Adaptive(DefaultSpin).
type Wait struct {
	mode     waitMode
	duration time.Duration // Adaptive: how long to spin; Sleep: poll interval
}

type waitMode uint8

const (
	modeAdaptive waitMode = iota
	modeSpin
	modeSleep
	modeFutex
)

// DefaultSpin is how long Adaptive spins before sleeping.
const DefaultSpin = 50 * time.Microsecond

// livenessInterval paces the liveness checks of the other side (a syscall each), so that a
// dead peer is noticed within about this long, and bounds a kernel sleep until the wait
// has been idle for idleAfter; then the other side's processes are watched for their death
// and a sleep lasts up to idleSleep.
const livenessInterval = 100 * time.Millisecond

// recheckInterval is how soon a liveness check that found the other side dead is repeated
// to confirm it (see endpoint.otherSideDead): a death is reported about this long after the
// check that first saw it, which, for an idle waiter, is the death watch's wake-up.
const recheckInterval = livenessInterval / 10

// Spin polls the ring without pause: the lowest latency, and one core at 100% while it waits.
func Spin() Wait { return Wait{mode: modeSpin} }

// Sleep polls the ring every d (at least 1µs): the classic polling loop, kept for
// comparison. Latency is up to d; CPU cost falls as d grows.
func Sleep(d time.Duration) Wait { return Wait{mode: modeSleep, duration: max(d, time.Microsecond)} }

// Futex sleeps in the kernel until the other side wakes it: an idle waiter costs no CPU, a
// wake-up costs a system call on each side. Where futexes are not supported it polls every
// millisecond.
func Futex() Wait { return Wait{mode: modeFutex} }

// Adaptive spins for up to spin (DefaultSpin if spin <= 0), then sleeps like Futex. Under
// load it behaves like Spin; idle it costs like Futex. It is the default.
func Adaptive(spin time.Duration) Wait {
	if spin <= 0 {
		spin = DefaultSpin
	}
	return Wait{mode: modeAdaptive, duration: spin}
}

func (w Wait) normalized() Wait {
	if w.mode == modeAdaptive && w.duration <= 0 {
		return Adaptive(0)
	}
	return w
}

// String returns the form ParseWait reads: "spin", "sleep:10ms", "futex", "adaptive:50µs".
func (w Wait) String() string {
	w = w.normalized()
	switch w.mode {
	case modeSpin:
		return "spin"
	case modeSleep:
		return "sleep:" + w.duration.String()
	case modeFutex:
		return "futex"
	}
	return "adaptive:" + w.duration.String()
}

// Duration is the strategy's parameter: how long Adaptive spins, how long Sleep sleeps
// between polls; zero for Spin and Futex.
func (w Wait) Duration() time.Duration { return w.normalized().duration }

// Name is the strategy without its parameter: "spin", "sleep", "futex" or "adaptive".
func (w Wait) Name() string { name, _, _ := strings.Cut(w.String(), ":"); return name }

// ParseWait reads "spin", "futex", "sleep" (10ms), "sleep:DURATION", "adaptive" or
// "adaptive:DURATION".
func ParseWait(s string) (Wait, error) {
	name, arg, hasArg := strings.Cut(s, ":")
	var d time.Duration
	if hasArg {
		var err error
		if d, err = time.ParseDuration(arg); err != nil || d <= 0 {
			return Wait{}, fmt.Errorf("wait strategy %q: bad duration %q", s, arg)
		}
	}
	switch {
	case name == "spin" && !hasArg:
		return Spin(), nil
	case name == "futex" && !hasArg:
		return Futex(), nil
	case name == "sleep":
		if !hasArg {
			d = 10 * time.Millisecond
		}
		return Sleep(d), nil
	case name == "adaptive":
		return Adaptive(d), nil
	}
	return Wait{}, fmt.Errorf("unknown wait strategy %q (want spin, sleep[:d], futex, adaptive[:d])", s)
}

// event is an eventcount in shared memory: sleepers wait on seq; waiters has one bit per
// sleeping peer (its peer-table index).
//
// The protocol, correct because Go's atomics are sequentially consistent:
//
//	sleeper: v := load(seq); or(waiters, bit); if !ready() { futexWait(seq, v) }; and(waiters, ^bit)
//
// The bit is the sleeping process's (its peer-table index): several endpoints of one process
// share it, and local.mark/unmark keep it set while any of them sleeps.
//
//	waker:   publish (a store the sleeper's ready() reads); if load(waiters) != 0 { add(seq, 1); futexWake(seq) }
//
// Either the waker's load of waiters comes after the sleeper's OR, and it bumps seq and
// wakes (futexWait returns at once if seq already moved), or it comes before, and then the
// sleeper's ready() comes after the publish and sees it. A busy sleeper costs the waker one
// load of a line nobody writes.
//
// rounds and granted make a waker pay one system call per sleep, not one per publish until
// the sleeper has run: a sleeper adds 1 to rounds after it marks itself and before its
// ready() check; a waker that finds rounds > granted bumps seq, wakes up to n of the rounds
// in between and records them with a CAS on granted; one that finds rounds == granted skips
// the system call, as every round begun so far was woken: its sleeper was woken, or read v
// before the seq bump and returns from futex_wait at once, and merely has not unmarked yet. No wake-up is lost: a round the waker's load of rounds does not see began
// after the waker's publish, so that sleeper's ready() sees the publish; a sleeper still in
// the kernel after a partial wake keeps its round ungranted for the next waker. Several
// wakers (MPMC writers, in any processes) share granted.
// With one sleeper and one waker (SPSC) the waker keeps its own record of the last round it
// woke instead, which costs no shared write, and one wake ends every round begun before it.
type event struct {
	id      int // evData or evSpace: which of a process's sleeper counts it uses
	seq     *uint32
	waiters *uint64
	rounds  *uint64
	granted *uint64
	single  bool // one sleeper and one waker at most (SPSC): the waker keeps granted itself
}

// Event ids.
const (
	evData  = 0
	evSpace = 1
)

// notify wakes the sleepers that began a round since the last wake, at most n of them (all
// of them for n <= 0), if any. It returns how many the system call woke, or -1 when it made
// no system call (nobody marked asleep, or every round already woken).
func (e event) notify(n int, woke *uint64) int {
	if atomic.LoadUint64(e.waiters) == 0 {
		return -1
	}
	if e.single {
		// One sleeper and one waker (SPSC): the waker remembers the last round it woke, in
		// its own memory; a wake ends every round begun before it.
		r := atomic.LoadUint64(e.rounds) // after the publish: pairs with the sleeper's add
		if r == *woke {
			return -1
		}
		*woke = r
		atomic.AddUint32(e.seq, 1)
		woken, _ := futex.Wake(e.seq, 1)
		return woken
	}
	g := atomic.LoadUint64(e.granted)
	r := atomic.LoadUint64(e.rounds) // after the publish: pairs with the sleeper's add
	if r == g {
		return -1 // every round begun so far was woken already
	}
	grant := min(r-g, 1<<30)
	if n > 0 {
		grant = min(grant, uint64(n))
	}
	// Wake first, then record it: a waker that dies or stalls in between leaves the rounds
	// ungranted, and the next publish wakes them. Of wakers racing here one records the
	// rounds; the others' wakes were extra, which costs time, never a wake-up.
	atomic.AddUint32(e.seq, 1)
	woken, _ := futex.Wake(e.seq, int(grant))
	atomic.CompareAndSwapUint64(e.granted, g, g+grant)
	return woken
}

// wakeAll wakes every sleeper unconditionally (close, cancellation).
func (e event) wakeAll() {
	atomic.AddUint32(e.seq, 1)
	_, _ = futex.Wake(e.seq, 1<<30)
}

// sleepers is how many peers are marked asleep.
func (e event) sleepers() int { return bits.OnesCount64(atomic.LoadUint64(e.waiters)) }

// waiter runs one endpoint's waits.
type waiter struct {
	strategy Wait
	loc      *local         // marks this process asleep on an event
	stop     *atomic.Uint32 // the endpoint's stop bits: non-zero once its Close began
	stats    *counters
	// watched, if set, is asked before a kernel sleep once the wait has been idle for
	// idleAfter: true means every process on the other side is watched for its death
	// (endpoint.watchOtherSide), so the sleep may last idleSleep instead of
	// livenessInterval: a death, a new peer and a publish each wake the sleeper.
	watched func() bool
	// intact, if set, checks the segment's file size with every liveness check: a
	// truncation that leaves the words the wait polls in place is found too.
	intact func() error
	// suspect, if set, is the endpoint's flag that the last liveness check found the other
	// side dead: the next check, which confirms it, comes recheckInterval later.
	suspect *bool
	// idle is how long a watched idle sleep lasts at most: idleSleep, or
	// mpmcReaderIdleSleep.
	idle time.Duration
	// ctxWake wakes this endpoint's sleeps when a context ends; made on the first wait with
	// a context that can end, and kept registered while later waits use the same context.
	// Atomic: the endpoint's Close (release) may run on another goroutine.
	ctxWake atomic.Pointer[ctxWake]
}

// ctxWake is the context wake-up of a waiter: a context.AfterFunc registration that wakes
// the event a sleep of this endpoint waits on. context.AfterFunc allocates, so the
// registration is kept from one wait to the next as long as the context stays the same
// (a worker's, a server's, a connection's context): waits with one long-lived context
// allocate nothing. A wait with another context replaces it.
//
// The wake-up runs on its own goroutine, possibly after the wait that armed it returned:
// it touches shared memory only while a wait is armed (mu), and never after release
// (the endpoint's Close), so it cannot write into a segment that was unmapped.
type ctxWake struct {
	fire func() // c.wake, made once: a method value allocates

	mu       sync.Mutex
	done     <-chan struct{} // the registered context's Done
	stop     func() bool
	ev       event
	armed    bool // a wait of the endpoint may be asleep on ev
	released bool // the endpoint closed: never touch shared memory again
}

func (c *ctxWake) wake() {
	c.mu.Lock()
	if c.armed && !c.released {
		c.ev.wakeAllGuarded()
	}
	c.mu.Unlock()
}

// armCtx makes sure that ctx's end wakes a sleep on ev until disarm. It reports false after
// release (the endpoint is closing; the caller does not sleep).
func (w *waiter) armCtx(ctx context.Context, ev event) bool {
	c := w.ctxWake.Load()
	if c == nil {
		c = &ctxWake{}
		c.fire = c.wake
		w.ctxWake.Store(c)
	}
	done := ctx.Done()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released {
		return false
	}
	if c.done != done {
		if c.stop != nil {
			c.stop() // a wake-up of the old context that already started finds armed false or wakes spuriously
		}
		c.done, c.stop = done, context.AfterFunc(ctx, c.fire)
	}
	c.ev, c.armed = ev, true
	return true
}

// disarmCtx ends what armCtx began; once it returns, a wake-up that was running is done.
func (w *waiter) disarmCtx() {
	c := w.ctxWake.Load()
	c.mu.Lock()
	c.armed = false
	c.mu.Unlock()
}

// release unregisters the context wake-up for good (the endpoint's Close). Called after the
// endpoint's operations stopped; a wake-up running now finishes first.
func (w *waiter) release() {
	c := w.ctxWake.Load()
	if c == nil {
		return
	}
	c.mu.Lock()
	c.released, c.armed = true, false
	if c.stop != nil {
		c.stop()
		c.stop, c.done = nil, nil
	}
	c.mu.Unlock()
}

// An idle waiter whose peers' deaths are watched sleeps idleSleep at a time rather than
// livenessInterval: an idle reader costs no periodic wake-up. idleSleep still bounds a
// sleep, as a safety net for a wake-up lost to a peer entry reused in between, and it is
// how late an idle waiter learns that its segment was truncated. A wake-up of a process's
// 20 idle waiters cost it about 4 ms of CPU on the project's VM (most of it the Go
// runtime's: sysmon polls for a while after threads leave a system call), so they sleep
// 30 s, all of a process's waiters at once (untilIdleTick): 0.16 ms of CPU per second per
// process, measured (0.40 ms at 10 s).
const (
	idleAfter = 2 * livenessInterval
	idleSleep = 30 * time.Second
	// mpmcReaderIdleSleep is an MPMC reader's: it also repairs what dead readers left (a
	// record borrowed, to deliver again), and a reader's death does not wake it (only the
	// other side's processes are watched), so it looks more often. A divisor of idleSleep:
	// every idleSleep tick is one of its ticks too.
	mpmcReaderIdleSleep = idleSleep / 3
)

// idleEpoch starts the process's grid of idle wake-ups, at a random phase: processes
// started together do not all wake at once.
var idleEpoch = time.Now().Add(-time.Duration(rand.Int64N(int64(idleSleep))))

// untilIdleTick is how long an idle sleep of period (idleSleep, or a divisor of it) that
// begins at now lasts: until the next tick of a grid shared by the whole process, so that
// the idle waiters of a process wake together rather than each at its own moment: a
// wake-up of the process (the Go runtime's own work around it included) is paid once for
// all of them.
func untilIdleTick(now time.Time, period time.Duration) time.Duration {
	return period - now.Sub(idleEpoch)%period
}

// await returns nil once ready() holds. It returns ErrClosed after the endpoint's Close,
// ctx's error when ctx ends, and whatever check returns: check(false) is called on every
// round and must be cheap (loads only); check(true) may make system calls (liveness) and is
// called about every livenessInterval.
func (w *waiter) await(ctx context.Context, ev event, ready func() bool, check func(expensive bool) error) error {
	if ready() {
		return nil
	}
	start := time.Now()
	nextCheck := start.Add(livenessInterval)
	// The context's wake-up touches shared memory: once await returns, the caller may close
	// the segment, so it is disarmed (and a wake-up running now waited for) on the way out.
	armed := false
	defer func() {
		if armed {
			w.disarmCtx()
		}
	}()
	for i := 0; ; i++ {
		if ready() {
			return nil
		}
		if w.stop.Load() != 0 {
			return ErrClosed
		}
		if err := check(false); err != nil {
			return err
		}
		spinning := w.strategy.mode == modeSpin || w.strategy.mode == modeAdaptive
		if spinning && i%128 != 0 {
			continue // a tight poll; the clock and the context are looked at every 128 rounds
		}
		now := time.Now()
		if err := ctx.Err(); err != nil {
			return err
		}
		if now.After(nextCheck) {
			if w.intact != nil {
				if err := w.intact(); err != nil {
					return err
				}
			}
			if err := check(true); err != nil {
				return err
			}
			nextCheck = now.Add(livenessInterval)
			if w.suspect != nil && *w.suspect {
				nextCheck = now.Add(recheckInterval)
			}
		}
		timeout := livenessInterval
		if w.suspect != nil && *w.suspect {
			timeout = max(nextCheck.Sub(now), time.Microsecond) // sleep until the confirming check
		} else if w.watched != nil && w.strategy.mode != modeSleep && now.Sub(start) >= idleAfter && w.watched() {
			timeout = untilIdleTick(now, w.idle)
		}
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, max(time.Until(dl), time.Microsecond))
		}
		switch {
		case w.strategy.mode == modeSpin:
		case w.strategy.mode == modeAdaptive && now.Sub(start) < w.strategy.duration:
		case w.strategy.mode == modeSleep:
			time.Sleep(min(w.strategy.duration, timeout))
		case !futex.Supported:
			time.Sleep(min(time.Millisecond, timeout))
		default:
			if !armed && ctx.Done() != nil {
				if !w.armCtx(ctx, ev) {
					return ErrClosed
				}
				armed = true
			}
			if !w.sleep(ctx, ev, ready, timeout) {
				nextCheck = now // the kernel refused the word (EFAULT: truncated?): check now
			}
		}
	}
}

// sleep is one round of the eventcount protocol (see event).
// It reports false when the kernel refused the wait (an error other than a timeout: the
// word's page is gone, say), so that the caller checks at once rather than spin. ctx is
// looked at after the word is loaded: its wake-up (armCtx) changes the word after ctx's
// end is visible, so an end that comes after this look makes the futex wait return.
func (w *waiter) sleep(ctx context.Context, ev event, ready func() bool, timeout time.Duration) bool {
	ok := true
	v := atomic.LoadUint32(ev.seq)
	w.loc.mark(ev)
	atomic.AddUint64(ev.rounds, 1) // after the mark, before ready(): pairs with notify's load
	if !ready() && w.stop.Load() == 0 && ctx.Err() == nil {
		w.stats.add(ctrFutexWaits, 1)
		err := futex.Wait(ev.seq, v, timeout)
		if err == futex.ErrTimeout && ready() {
			// The condition held when the timeout fired: unless it turned true in the
			// last instant, a wake-up was lost. Counted so that tests can prove it never is.
			w.stats.add(ctrLateWakes, 1)
		}
		ok = err == nil || err == futex.ErrTimeout
	}
	w.loc.unmark(ev)
	return ok
}
