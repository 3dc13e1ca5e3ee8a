package ring

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/shmq/shmq/internal/fence"
	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// local is what the endpoints of one open segment share inside this process: the segment's
// peer entry (one per process and segment, whatever the number of endpoints), how many of
// them sleep on each event (the peer's waiter bit is set while any does), and how many claim
// cells they hold (the peer's hold flag is set while any is held).
type local struct {
	seg  *shm.Segment
	peer *shm.Peer
	bit  uint64 // the peer's bit in the waiter masks

	mu       sync.Mutex
	refs     int    // endpoints using this local
	sleepers [2]int // endpoints marked asleep, by event (evData, evSpace)
	cells    int    // claim cells held by this process's endpoints
	// sole is the endpoint of each side that keeps the side's counters in the peer words.
	sole [2]*endpoint
}

// join makes e its side's sole endpoint in this process if there is none, and reports
// whether it did.
func (l *local) join(e *endpoint) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sole[e.side] != nil {
		return false
	}
	l.sole[e.side] = e
	return true
}

// leaveSide gives up e's place as its side's sole endpoint, after its counters are retired.
func (l *local) leaveSide(e *endpoint) {
	l.mu.Lock()
	if l.sole[e.side] == e {
		l.sole[e.side] = nil
	}
	l.mu.Unlock()
}

var (
	localsMu sync.Mutex
	locals   = map[*shm.Segment]*local{}
)

// acquireLocal returns seg's local state, creating it for the first endpoint.
func acquireLocal(seg *shm.Segment) (*local, error) {
	peer := seg.Peer()
	if seg.ReadOnly() || peer == nil {
		return nil, fmt.Errorf("ring endpoint on %s: %w", seg.Name(), shm.ErrReadOnly)
	}
	localsMu.Lock()
	defer localsMu.Unlock()
	l := locals[seg]
	if l == nil {
		l = &local{seg: seg, peer: peer, bit: 1 << uint(peer.Index())}
		locals[seg] = l
	}
	l.refs++
	return l, nil
}

func (l *local) release() {
	localsMu.Lock()
	defer localsMu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(locals, l.seg)
	}
}

// mark sets this process's bit in ev's waiter mask if no other endpoint of the process has.
// The bit is set whenever one of them is marked, so a sleeper's re-check always comes after
// the bit was set (see event).
// The mutex is released by defer: the atomic may fault on a truncated file (the caller
// recovers), and the mutex must not stay locked then.
func (l *local) mark(ev event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sleepers[ev.id]++; l.sleepers[ev.id] == 1 {
		atomic.OrUint64(ev.waiters, l.bit) // pairs with the waker's load in event.notify
	}
}

func (l *local) unmark(ev event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sleepers[ev.id]--; l.sleepers[ev.id] == 0 {
		atomic.AndUint64(ev.waiters, ^l.bit)
	}
}

// counters are one side's statistics. The first endpoint of a side attached in a process
// (its sole one) keeps them in the process's peer words and is their only writer, so it
// updates them with a plain load and release store, no read-modify-write on the hot path.
// Any further endpoint of that side in the process adds atomically to the side's pool in
// the kind header, where closed endpoints' counters go too. Anyone may load both.
type counters struct {
	words  [numCounters]*uint64
	atomic bool // words are the pool, shared with other endpoints
}

func newCounters(mem []byte, off int, shared bool) counters {
	c := counters{atomic: shared}
	for i := range c.words {
		c.words[i] = layout.Uint64(mem, off+8*i)
	}
	return c
}

// add adds d to counter i; adding nothing costs nothing.
func (c *counters) add(i int, d uint64) {
	switch {
	case d == 0:
	case c.atomic:
		atomic.AddUint64(c.words[i], d)
	default:
		fence.StoreRelease64(c.words[i], atomic.LoadUint64(c.words[i])+d)
	}
}

// add2 is add(i, d) and add(j, e) in one call, for the pair (messages and bytes) that every
// commit and release updates.
func (c *counters) add2(i int, d uint64, j int, e uint64) {
	if c.atomic {
		c.add(i, d)
		c.add(j, e)
		return
	}
	if d != 0 {
		fence.StoreRelease64(c.words[i], atomic.LoadUint64(c.words[i])+d)
	}
	if e != 0 {
		fence.StoreRelease64(c.words[j], atomic.LoadUint64(c.words[j])+e)
	}
}

// retire moves a sole endpoint's counters into its side's pool in the kind header, so
// totals survive the process's detaching. It runs when the endpoint is closed, so no update
// of its races with it.
func (c *counters) retire(hdr []byte, block int) {
	if c.atomic {
		return // already in the pool
	}
	for i, w := range c.words {
		if v := atomic.SwapUint64(w, 0); v != 0 {
			atomic.AddUint64(layout.Uint64(hdr, block+8*i), v)
		}
	}
}
