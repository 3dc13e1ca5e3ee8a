package ring

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

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

// counters are one peer's statistics in its peer-table entry. Only that peer writes them
// (an atomic add on a line no other writer touches); anyone may load them.
type counters struct {
	words [numCounters]*uint64
}

func newCounters(peerWords []byte) counters {
	var c counters
	for i := range c.words {
		c.words[i] = layout.Uint64(peerWords, pwCounters+8*i)
	}
	return c
}

func (c *counters) add(i int, d uint64) {
	if c != nil && c.words[i] != nil {
		atomic.AddUint64(c.words[i], d)
	}
}

// retire folds the counters into a retired block of the header and zeroes them, so totals
// survive the peer's detaching.
func (c *counters) retire(hdr []byte, block int) {
	for i, w := range c.words {
		if v := atomic.SwapUint64(w, 0); v != 0 {
			atomic.AddUint64(layout.Uint64(hdr, block+8*i), v)
		}
	}
}

// endpoint is what writers and readers of both kinds share: the segment, the peer entry
// that makes this endpoint visible and alive to others, its counters and its waits.
type endpoint struct {
	seg   *shm.Segment
	hdr   []byte // segment header (hot blocks, peer table)
	data  []byte // data region
	size  uint64 // len(data), a power of two
	mask  uint64 // size - 1
	peer  *shm.Peer
	role  *shm.RoleLock // exclusive role, SPSC only
	stats counters
	wait  waiter

	lastRepair time.Time // when repairSleepers last ran

	// opMu is held by every operation; Close sets closed, wakes the operation that may be
	// asleep, then takes opMu, so it never detaches under a running call.
	opMu   sync.Mutex
	closed atomic.Bool
}

// attach checks the kind, takes the exclusive role if there is one, and claims a peer entry.
func (e *endpoint) attach(seg *shm.Segment, kind shm.Kind, role shm.Role, exclusive bool, opts Options) error {
	if seg.ReadOnly() {
		return shm.ErrReadOnly
	}
	if got := seg.Descriptor().Kind; got != kind {
		return fmt.Errorf("%w: segment %s is %v, not %v", ErrKind, seg.Name(), got, kind)
	}
	e.seg, e.hdr, e.data = seg, seg.Header(), seg.Data()
	e.size = uint64(len(e.data))
	e.mask = e.size - 1
	if exclusive {
		l, err := seg.AcquireRole(role)
		if errors.Is(err, shm.ErrBusy) {
			return fmt.Errorf("%w: %v of %s", ErrBusy, role, seg.Name())
		}
		if err != nil {
			return err
		}
		e.role = l
	}
	p, err := seg.Attach(role)
	if err != nil {
		if e.role != nil {
			e.role.Release()
		}
		return err
	}
	e.peer = p
	e.stats = newCounters(p.Words())
	e.wait = waiter{strategy: opts.Wait.normalized(), bit: 1 << uint(p.Index()), closed: &e.closed, stats: &e.stats}
	return nil
}

// enter starts an operation; it fails with ErrClosed after Close.
func (e *endpoint) enter() error {
	e.opMu.Lock()
	if e.closed.Load() {
		e.opMu.Unlock()
		return ErrClosed
	}
	return nil
}

func (e *endpoint) leave() { e.opMu.Unlock() }

// shutdown is Close's common part: stop new operations, wake a sleeping one (ev is the event
// this endpoint sleeps on), wait for it to leave, then retire counters and detach.
func (e *endpoint) shutdown(ev event, retiredBlock int, last func()) error {
	if e.closed.Swap(true) {
		return nil
	}
	ev.wakeAll()
	e.opMu.Lock()
	defer e.opMu.Unlock()
	if last != nil {
		last()
	}
	e.stats.retire(e.hdr, retiredBlock)
	err := e.peer.Detach() // an unfinished claim is left for a live peer to repair
	if e.role != nil {
		if rerr := e.role.Release(); err == nil {
			err = rerr
		}
	}
	return err
}

func (e *endpoint) u64(off int) *uint64 { return layout.Uint64(e.hdr, off) }
func (e *endpoint) u32(off int) *uint32 { return layout.Uint32(e.hdr, off) }

func (e *endpoint) dataEvent() event {
	return event{seq: e.u32(offDataSeq), waiters: e.u64(offDataWaiters)}
}

func (e *endpoint) spaceEvent() event {
	return event{seq: e.u32(offSpaceSeq), waiters: e.u64(offSpaceWaiters)}
}

// notify wakes up to n sleepers of ev and counts the system call. When the call woke nobody
// although sleepers are marked, one of them may have died asleep: at most once per
// livenessInterval it looks for dead sleepers and clears their marks.
func (e *endpoint) notify(ev event, n int) {
	woken := ev.notify(n)
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

// repairSleepers clears the waiter bits of peers that died asleep, so that the other side
// stops paying a wake-up system call for them. It makes one liveness check per set bit and
// is called only on the slow path (a wait round), never per message.
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

func align8(n uint64) uint64 { return (n + 7) &^ 7 }
