package ring

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/internal/deathwatch"
	"github.com/shmq/shmq/internal/fence"
	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// Options configures an endpoint. The zero value means the defaults.
type Options struct {
	// Wait is how blocking calls wait; the zero value is Adaptive(DefaultSpin).
	Wait Wait
}

// Record is one message as the reader sees it. Data aliases the ring's shared memory when
// it came from Next or Drain: it is valid until Release (or the reader's Close) and must
// not be written.
type Record struct {
	Type uint32
	Data []byte
}

// Exclusive roles of SPSC endpoints (shm role lock bytes).
const (
	roleSPSCWriter shm.Role = 1
	roleSPSCReader shm.Role = 2
)

// side says which end of the ring an endpoint is.
type side int

const (
	writerSide side = iota
	readerSide
)

func (s side) countWord() int {
	if s == writerSide {
		return pwWriters
	}
	return pwReaders
}

// endpoint is what writers and readers of every kind share: the segment, the process's
// peer entry, this side's counters, its waits and its lifecycle.
//
// Lifecycle: every operation runs between enter and leave, which mark the endpoint busy
// with a plain release store (internal/fence), no lock and no atomic read-modify-write, as
// the endpoint belongs to one goroutine at a time. Close sets closed, wakes a call that may
// sleep, runs the heavy side of the fence and waits until busy is clear: so it never
// changes shared state under a running call, and an operation that enters after Close gets
// ErrClosed and touches nothing. The segment runs Close of every endpoint (OnClose) before
// it unmaps, and the endpoint holds a pin on the segment from attach until Close (or, when
// records are still borrowed or reserved then, until they are given back), so that the
// mapping outlives every slice handed out.
type endpoint struct {
	seg   *shm.Segment
	loc   *local
	geo   geometry
	side  side
	hdr   []byte // the kind header
	data  []byte // the data region
	mask  uint64 // len(data) - 1
	pw    []byte // this process's peer words
	stats counters
	role  *shm.RoleLock // SPSC only
	wait  waiter

	lastRepair time.Time // when repairSleepers last ran
	woke       [2]uint64 // by event id: the last sleep round this endpoint woke (SPSC, event.notify)
	events     [2]event  // by id: evData, evSpace

	busy uint32 // 1 while an operation runs: fence.StoreRelease32 by the owner, loaded by close
	// inCallback is 1 while Drain runs the caller's function: the operation touches no
	// shared memory then and re-checks closed before it does again, so close need not wait
	// for it (and must not: the function may be the one calling Close).
	inCallback uint32
	counted    bool // the endpoint is counted in the process's peer words (attached in full)
	suspect    bool // the last liveness check found the other side dead (otherSideDead)
	opened     bool // this writer opened (or joined) the stream: its Close may end it
	// stop is non-zero once the endpoint stops: stopClosed when Close began, stopBroken
	// when a call found the segment truncated (brokenErr, written before the bit). One load
	// in enter tells both.
	stop      atomic.Uint32
	brokenErr error
	pinned    bool        // the endpoint holds its pin on the segment
	holds     func() bool // records borrowed (reader) or reserved (writer) right now
	closeOnce sync.Once
	closeErr  error
	closer    func() error // the kind's Close, run when the segment closes
	unhook    func()
	armed     bool // an event loop armed this endpoint's wake-up word (Arm)
	// watches are the death watches of the other side's processes (watchOtherSide), by pid:
	// the endpoint's goroutine sets them up, close cancels them.
	watches map[int]*deathWatch
}

// deathWatch is one death watch of a process on the other side.
type deathWatch struct {
	cancel func()
	fired  atomic.Bool // the process died: the watch is spent
}

// attach checks the segment, takes the exclusive role if there is one and counts the
// endpoint in the process's peer words. On success the endpoint holds a pin on the segment
// and is marked busy until finishAttach, so that a Close of the segment (which closes the
// endpoint) waits for the endpoint to be built.
func (e *endpoint) attach(seg *shm.Segment, kind shm.Kind, sd side, role shm.Role, opts Options, closer func() error) error {
	geo, err := parseGeometry(seg.Descriptor())
	if err != nil {
		return fmt.Errorf("%s: %w", seg.Name(), err)
	}
	if geo.kind != kind {
		return fmt.Errorf("%w: segment %s is %v, not %v", ErrKind, seg.Name(), geo.kind, kind)
	}
	if err := seg.Pin(); err != nil {
		return fmt.Errorf("%w: segment %s is closed", ErrClosed, seg.Name())
	}
	loc, err := acquireLocal(seg)
	if err != nil {
		seg.Unpin()
		return err
	}
	d := seg.Descriptor()
	e.seg, e.loc, e.geo, e.side = seg, loc, geo, sd
	e.hdr = seg.Header()[d.KindHeaderOffset : d.KindHeaderOffset+d.KindHeaderSize]
	e.data = seg.Data()
	e.mask = uint64(len(e.data)) - 1
	e.pw = loc.peer.Words()
	e.events[evData] = event{id: evData, seq: e.u32(offDataSeq), waiters: e.u64(offDataWaiters),
		rounds: e.u64(offDataRounds), granted: e.u64(offDataGranted), single: kind == SPSC}
	e.events[evSpace] = event{id: evSpace, seq: e.u32(offSpaceSeq), waiters: e.u64(offSpaceWaiter),
		rounds: e.u64(offSpaceRounds), granted: e.u64(offSpaceGranted), single: kind == SPSC}
	e.woke = [2]uint64{^uint64(0), ^uint64(0)} // no round woken yet
	if loc.join(e) {
		off := pwWriterCtrs
		if sd == readerSide {
			off = pwReaderCtrs
		}
		e.stats = newCounters(e.pw, off, false)
	} else {
		e.stats = newCounters(e.hdr, e.retiredBlock(), true)
	}
	e.wait = waiter{strategy: opts.Wait.normalized(), loc: loc, stop: &e.stop, stats: &e.stats,
		watched: e.watchOtherSide, intact: e.intact, suspect: &e.suspect, idle: idleSleep}
	if kind == MPMC && sd == readerSide {
		e.wait.idle = mpmcReaderIdleSleep
	}
	if role != 0 {
		l, err := seg.AcquireRole(role)
		if err != nil {
			loc.leaveSide(e)
			loc.release()
			seg.Unpin()
			switch {
			case errors.Is(err, shm.ErrBusy):
				return fmt.Errorf("%w: the %s of %s", ErrBusy, sideName(sd), seg.Name())
			case errors.Is(err, shm.ErrClosed):
				return fmt.Errorf("%w: segment %s is closed", ErrClosed, seg.Name())
			}
			return err
		}
		e.role = l
	}
	e.closer = closer
	e.pinned = true
	if e.holds == nil {
		e.holds = func() bool { return false }
	}
	// Busy until finishAttach: a Close that the segment's closing runs meanwhile (possibly
	// on another goroutine, at once) waits for the endpoint to be built.
	fence.StoreRelease32(&e.busy, 1)
	e.unhook = seg.OnClose(func() { _ = closer() })
	return nil
}

// finishAttach ends a constructor that attach succeeded for (err is the constructor's own
// check). If the segment began to close meanwhile (its close may have passed the point where
// it closes endpoints) or err is set, the endpoint closes itself, while the segment is still
// pinned, and the constructor fails. Otherwise open runs (a writer opens the stream there)
// while the endpoint is still busy, so that a Close the segment's closing runs waits for it
// and can undo it. Every constructor calls it exactly once after attach.
func (e *endpoint) finishAttach(err error, open func()) error {
	if err == nil {
		if perr := e.seg.Pin(); perr != nil {
			err = fmt.Errorf("%w: segment %s closed while the endpoint attached", ErrClosed, e.seg.Name())
		} else {
			e.seg.Unpin()
		}
	}
	if err == nil {
		err = e.countIn(open)
	}
	if err != nil {
		fence.StoreRelease32(&e.busy, 0)
		_ = e.closer() // unpins
		return err
	}
	fence.StoreRelease32(&e.busy, 0)
	return nil
}

// countIn counts the endpoint in its process's peer words and runs open, under
// SetPanicOnFault (a truncated file is an error). Counted only now, so that an endpoint
// that fails to attach never counted as live (and never has to end a stream for it). The
// count is read by the other side's liveness checks and, for writers, by endStream.
func (e *endpoint) countIn(open func()) (err error) {
	defer e.catchQuiet(debug.SetPanicOnFault(true), &err)
	e.forgetDeadPeers()
	atomic.AddUint32(layout.Uint32(e.pw, e.side.countWord()), 1)
	e.counted = true
	e.otherEvent().wakeAll() // idle sleepers of the other side start watching this process
	if open != nil {
		open()
	}
	return nil
}

// guarded runs fn, a constructor's reads of the shared state between attach and
// finishAttach, under SetPanicOnFault: a truncated file is an error.
func (e *endpoint) guarded(fn func() error) (err error) {
	defer e.catchQuiet(debug.SetPanicOnFault(true), &err)
	return fn()
}

func sideName(s side) string {
	if s == writerSide {
		return "writer"
	}
	return "reader"
}

// enter starts an operation; it fails with ErrClosed after Close, and with the truncation
// error once the endpoint is broken (see fault.go). The busy store pairs with the load in
// close, ordered by fence.Heavy there: either close sees the operation, or the operation
// sees the stop.
func (e *endpoint) enter() error {
	fence.StoreRelease32(&e.busy, 1)
	if s := e.stop.Load(); s != 0 {
		fence.StoreRelease32(&e.busy, 0)
		return e.stopped(s)
	}
	return nil
}

// stopped is enter's error for the stop bits s.
func (e *endpoint) stopped(s uint32) error {
	if s&stopClosed == 0 {
		return e.brokenErr
	}
	return ErrClosed
}

// isClosed reports whether Close began.
func (e *endpoint) isClosed() bool { return e.stop.Load()&stopClosed != 0 }

// leave ends an operation: its accesses to shared memory happen before the store.
func (e *endpoint) leave() { fence.StoreRelease32(&e.busy, 0) }

// afterClose is for a call that found the endpoint closed but must let go of what it
// holds (Release, Reject, Commit, Abort after Close): it waits until Close has finished,
// runs forget (which drops the Go-side record of what was held), then gives back the
// endpoint's pin, which Close kept while records were borrowed or reserved. It touches no
// shared memory. On an endpoint that is broken (its segment was truncated) but not closed,
// it only runs forget: what was held is given back, Go-side (the ring is gone), so that
// Close need not keep the mapping for it.
func (e *endpoint) afterClose(forget func()) {
	if !e.isClosed() {
		if forget != nil {
			forget()
		}
		return
	}
	_ = e.closer() // returns once the first Close is done
	if forget != nil {
		forget()
	}
	if e.pinned {
		e.pinned = false
		e.seg.Unpin() // the mapping may go once nothing is pinned
	}
}

// close is Close's common part. The first call does the work; every other call, from any
// goroutine, waits for it and returns the same error. finish runs with the endpoint stopped
// and before it is uncounted (a writer publishes or skips what it reserved there).
//
// What it writes to the mapping runs under SetPanicOnFault (closeShared): if the file was
// truncated, Close still gives up the role, the pin and its place in the process, and
// returns an error wrapping shm.ErrTruncated.
func (e *endpoint) close(finish func()) error {
	e.closeOnce.Do(func() {
		var held bool
		e.stop.Or(stopClosed)
		fence.Heavy()
		defer func() {
			if e.pinned && !held {
				e.pinned = false
				e.seg.Unpin() // last: the mapping may go once nothing is pinned
			}
		}()
		for atomic.LoadUint32(&e.busy) != 0 && atomic.LoadUint32(&e.inCallback) == 0 {
			e.dataEvent().wakeAllGuarded() // a blocked call of this endpoint returns ErrClosed
			e.spaceEvent().wakeAllGuarded()
			time.Sleep(20 * time.Microsecond)
		}
		e.wait.release() // a context's wake-up never touches the mapping again
		for pid, w := range e.watches {
			w.cancel() // returns once a death callback running now is done with the mapping
			delete(e.watches, pid)
		}
		held = e.holds() // records handed out stay mapped until given back (afterClose)
		e.closeErr = e.closeShared(finish)
		if e.role != nil {
			if err := e.role.Release(); e.closeErr == nil {
				e.closeErr = err
			}
		}
		e.unhook()
		e.loc.leaveSide(e)
		e.loc.release()
	})
	return e.closeErr
}

// closeShared is what close writes to the shared memory, under SetPanicOnFault: a fault
// (the file was truncated) ends it with the error.
func (e *endpoint) closeShared(finish func()) (err error) {
	defer e.catchQuiet(debug.SetPanicOnFault(true), &err)
	if e.armed {
		e.armed = false
		e.loc.unmark(e.ownEvent())
		e.ownEvent().wakeAll() // an event loop asleep on the armed word learns of the Close
	}
	if finish != nil {
		finish()
	}
	e.stats.retire(e.hdr, e.retiredBlock())
	closing := layout.Uint32(e.pw, pwClosing)
	if e.opened {
		// Marked closing from here until the stream is ended or another writer found live:
		// a reader that finds no writer counted meanwhile sees a live process closing one,
		// which is no death (sidePeers).
		atomic.AddUint32(closing, 1)
		// Before uncounting, so that a reader does not see the stream open with no live
		// writer while the last one is still deciding to end it (that looks like a death).
		e.endStream(true)
	}
	if e.counted {
		atomic.AddUint32(layout.Uint32(e.pw, e.side.countWord()), ^uint32(0))
	}
	if e.opened {
		e.endStream(false) // writers closing at once each saw the other: the last one out ends it
		atomic.AddUint32(closing, ^uint32(0))
	}
	return nil
}

// retiredBlock is the offset of the side's counter pool in the kind header.
func (e *endpoint) retiredBlock() int {
	if e.side == readerSide {
		return offRetiredR
	}
	return offRetiredW
}

func (e *endpoint) u64(off int) *uint64 { return layout.Uint64(e.hdr, off) }
func (e *endpoint) u32(off int) *uint32 { return layout.Uint32(e.hdr, off) }

// dataEvent is the eventcount readers sleep on; spaceEvent the one writers sleep on. Both
// are built once at attach.
func (e *endpoint) dataEvent() event { return e.events[evData] }

func (e *endpoint) spaceEvent() event { return e.events[evSpace] }

// otherEvent is the event the other side waits on.
func (e *endpoint) otherEvent() event {
	if e.side == readerSide {
		return e.spaceEvent()
	}
	return e.dataEvent()
}

// watchOtherSide makes sure that the death of every process with an endpoint on the other
// side wakes this endpoint's sleep (internal/deathwatch), and reports whether it does. It
// lists the peer table, so it runs only before long sleeps. False while a dead peer is
// suspected (the checks must run every livenessInterval then), when a process on the
// other side is already dead, and where deaths cannot be watched.
func (e *endpoint) watchOtherSide() bool {
	if e.suspect {
		return false
	}
	other := readerSide
	if e.side == readerSide {
		other = writerSide
	}
	// listed lists the other side's live processes by entry index (their pids), with one
	// listing of the peer table; false if one of them is dead or the table cannot be read.
	listed := func() (map[int]int, bool) {
		peers, err := e.seg.Peers()
		if err != nil {
			return nil, false
		}
		pids := map[int]int{}
		for _, p := range peers {
			words, err := e.seg.PeerWords(p.Index)
			if err != nil {
				return nil, false
			}
			if atomic.LoadUint32(layout.Uint32(words, other.countWord())) == 0 {
				continue
			}
			if !p.Alive || p.PID <= 0 {
				return nil, false
			}
			pids[p.Index] = p.PID
		}
		return pids, true
	}
	before, ok := listed()
	if !ok {
		return false
	}
	if e.watches == nil {
		e.watches = map[int]*deathWatch{}
	}
	want := map[int]bool{}
	own := e.ownEvent()
	added := false
	for _, pid := range before {
		want[pid] = true
		if w, ok := e.watches[pid]; ok {
			if !w.fired.Load() {
				continue
			}
			w.cancel() // spent: its process died, and the pid names another one now
		}
		w := &deathWatch{}
		cancel, err := deathwatch.Watch(pid, func() { w.fired.Store(true); own.wakeAllGuarded() })
		if err != nil {
			delete(e.watches, pid)
			return false
		}
		w.cancel = cancel
		e.watches[pid] = w
		added = true
	}
	for pid, w := range e.watches {
		if !want[pid] {
			w.cancel()
			delete(e.watches, pid)
		}
	}
	if !added {
		// Every watch was in place before this listing: each is on the process it was set
		// up for (a pidfd names its process for good), and that process was listed alive
		// just now, so the watches cover the other side.
		return true
	}
	// A pid names the process only while it runs: listed again after the new watches
	// began, each entry still held by the same pid means each watch is on the right process.
	after, ok := listed()
	if !ok || len(after) != len(before) {
		return false
	}
	for i, pid := range before {
		if after[i] != pid {
			return false
		}
	}
	return true
}

// ownEvent is the event this endpoint waits on: data for a reader, room for a writer.
func (e *endpoint) ownEvent() event {
	if e.side == readerSide {
		return e.dataEvent()
	}
	return e.spaceEvent()
}

// notify wakes up to n sleepers of ev and counts the system call. When the call woke nobody
// although sleepers are marked, one of them may have died asleep: at most once per
// livenessInterval it looks for dead sleepers and clears their marks.
func (e *endpoint) notify(ev event, n int) {
	woken := ev.notify(n, &e.woke[ev.id])
	if woken < 0 {
		return
	}
	e.stats.add(ctrFutexWakes, 1)
	if woken == 0 {
		if now := time.Now(); now.Sub(e.lastRepair) >= livenessInterval {
			e.lastRepair = now
			e.repairSleepers(ev)
		}
	}
}

// repairSleepers clears the waiter bits of processes that died asleep, so that the other
// side stops paying a wake-up system call for them. It makes one liveness check per set bit
// and runs only on the slow path, never per message.
func (e *endpoint) repairSleepers(ev event) {
	mask := atomic.LoadUint64(ev.waiters)
	for i := 0; mask != 0 && i < layout.PeerCount; i++ {
		bit := uint64(1) << uint(i)
		if mask&bit == 0 {
			continue
		}
		mask &^= bit
		if alive, err := e.seg.Alive(i); err == nil && !alive {
			atomic.AndUint64(ev.waiters, ^bit)
		}
	}
}

// Wake is the futex word an event loop sleeps on for an armed endpoint, and the value it
// held when the endpoint was armed: futex_wait(Word, Value) returns as soon as the other
// side publishes (or frees room), because it changes the word before it wakes.
type Wake struct {
	Word  *uint32
	Value uint32
}

// arm marks this process asleep on the endpoint's event so the other side wakes it, then
// checks ready: when ready already holds it unmarks and returns false (do not sleep).
func (e *endpoint) arm(ready func() bool) (_ Wake, _ bool, err error) {
	if err := e.enter(); err != nil {
		return Wake{}, false, err
	}
	defer e.leave()
	defer e.catch(debug.SetPanicOnFault(true), &err)
	ev := e.ownEvent()
	v := atomic.LoadUint32(ev.seq) // before the mark, as in waiter.sleep
	if !e.armed {
		e.loc.mark(ev)
		e.armed = true
	}
	atomic.AddUint64(ev.rounds, 1) // a new round, as in waiter.sleep
	if ready() {
		e.armed = false
		e.loc.unmark(ev)
		return Wake{}, false, nil
	}
	return Wake{Word: ev.seq, Value: v}, true, nil
}

func (e *endpoint) disarm() {
	if e.enter() != nil {
		return
	}
	defer e.leave()
	var err error // a truncation breaks the endpoint: its next call says so
	defer e.catch(debug.SetPanicOnFault(true), &err)
	if e.armed {
		e.armed = false
		e.loc.unmark(e.ownEvent())
	}
}
