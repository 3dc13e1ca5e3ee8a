package dlq

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// Entry is one dead letter. Entries returned by this package are copies.
type Entry struct {
	// Seq orders the entries: assigned by Put, increasing (ignored by Put).
	Seq uint64
	// Origin names the ring segment the entry came from and that ToRing writes it back
	// to (at most MaxOriginLen bytes; may be empty).
	Origin string
	// Type is the ring record type the data travelled with, written again on replay.
	Type uint32
	// Attempts is how often delivery was tried.
	Attempts uint32
	// Err is the last error's text (cut to MaxErrorLen bytes).
	Err string
	// DeadAt is when the entry was dead-lettered; Put sets time.Now() if it is zero.
	DeadAt time.Time
	// Data is the event, opaque to this package (the bus's envelope bytes).
	Data []byte

	// State is set by List: Ready, or Taken while a Take holds the entry.
	State State
	// HolderPID is set by List for a Taken entry: the taking process.
	HolderPID int
	// HolderDead is set by List for a Taken entry whose taker died: the next Take, Put
	// or Purge makes it Ready again.
	HolderDead bool
}

// State is an entry's state as List sees it.
type State uint8

const (
	Ready State = iota + 1 // waiting to be taken
	Taken                  // handed to a Take, not yet removed
)

func (s State) String() string {
	switch s {
	case Ready:
		return "ready"
	case Taken:
		return "taken"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Stats are a DLQ's counters, shared by every process, since its creation.
type Stats struct {
	Len       int    // entries in the queue now (ready and taken)
	Cap       int    // slots
	Puts      uint64 // entries put
	Taken     uint64 // entries removed by a Take whose function succeeded
	Returned  uint64 // entries given back by a Take whose function failed
	Recovered uint64 // entries given back after their taker died
	Purged    uint64 // entries removed by Purge
	Full      uint64 // Puts refused with ErrFull
	Corrupt   uint64 // corrupt slots dropped
	Abandoned uint64 // slots freed after a Put's process died while writing
}

// Queue is an open dead-letter queue. Its methods are safe for concurrent use by multiple
// goroutines; Close may be called any number of times, from any goroutine, also while
// other calls run. None of them blocks except the functions Take and Replay run.
type Queue struct {
	seg      *shm.Segment
	geo      geometry
	hdr      []byte // kind header
	data     []byte // slots
	peer     int    // our peer entry, the holder id in state words with pid
	pid      int
	readOnly bool

	mu     sync.Mutex
	held   map[uint64]bool // slots this Queue has Taken, until their Take finishes
	closed bool
	remove func() // unregisters the OnClose hook
}

// Create makes a new DLQ named name, sized by c. Errors: ErrInvalid for c, and those of
// shm.Create (shm.ErrExist if the name is taken, ...).
func Create(name string, c Config, opts shm.Options) (*Queue, error) {
	spec, err := c.spec()
	if err != nil {
		return nil, err
	}
	seg, err := shm.Create(name, spec, opts)
	if err != nil {
		return nil, err
	}
	return attach(seg)
}

// OpenOrCreate opens the DLQ name, creating it sized by c if it does not exist; created
// says which. An existing DLQ of another size is refused with shm.ErrMismatch.
func OpenOrCreate(name string, c Config, opts shm.Options) (q *Queue, created bool, err error) {
	spec, err := c.spec()
	if err != nil {
		return nil, false, err
	}
	opts.Kind = Kind
	seg, created, err := shm.OpenOrCreate(name, spec, opts)
	if err != nil {
		return nil, false, err
	}
	q, err = attach(seg)
	return q, created, err
}

// Open opens the existing DLQ name for every operation. Errors: those of shm.Open,
// ErrKind for another kind of segment, ErrVersion, ErrCorrupt for a bad geometry.
func Open(name string, opts shm.Options) (*Queue, error) {
	opts.Kind = Kind
	seg, err := shm.Open(name, opts)
	if err != nil {
		return nil, err
	}
	return attach(seg)
}

// Inspect opens the DLQ name read-only: List, Len and Stats work, and change no byte of
// the segment; Put, Take, Replay and Purge return ErrReadOnly. Errors as Open.
func Inspect(name string, opts shm.Options) (*Queue, error) {
	opts.Kind = Kind
	seg, err := shm.Inspect(name, opts)
	if err != nil {
		return nil, err
	}
	return attach(seg)
}

func attach(seg *shm.Segment) (*Queue, error) {
	geo, err := parseGeometry(seg.Descriptor())
	if err != nil {
		seg.Close()
		return nil, err
	}
	d := seg.Descriptor()
	if d.KindHeaderSize < kindHeaderUsed || d.KindHeaderOffset+d.KindHeaderSize > uint64(len(seg.Header())) {
		seg.Close()
		return nil, fmt.Errorf("%w: kind header of %d bytes at %d", ErrCorrupt, d.KindHeaderSize, d.KindHeaderOffset)
	}
	hdr := seg.Header()[d.KindHeaderOffset : d.KindHeaderOffset+d.KindHeaderSize]
	q := &Queue{seg: seg, geo: geo, hdr: hdr, data: seg.Data(), pid: os.Getpid(),
		readOnly: seg.ReadOnly(), held: map[uint64]bool{}}
	if p := seg.Peer(); p != nil {
		q.peer = p.Index()
	}
	q.remove = seg.OnClose(q.giveBack)
	return q, nil
}

// Close gives back the entries this Queue's Takes hold (a Take still running then
// returns ErrClosed; its entry is taken again later) and closes the segment. It is safe
// from any goroutine, any number of times.
func (q *Queue) Close() error {
	return q.seg.Close()
}

// Segment is the segment the queue lives in (its Name, Descriptor, Peers).
func (q *Queue) Segment() *shm.Segment { return q.seg }

// Cap is the number of slots: Put fails with ErrFull when they all hold entries.
func (q *Queue) Cap() int { return int(q.geo.slots) }

// MaxEntry is the largest origin + error text + data, in bytes, an entry may have.
func (q *Queue) MaxEntry() int { return int(q.geo.slotSize) - slotHeader - recordHeader }

// giveBack is the OnClose hook: entries still Taken by us go back to Ready, so that they
// are not stuck under a holder that looks alive (this process).
func (q *Queue) giveBack() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	for i := range q.held {
		if atomic.CompareAndSwapUint64(q.state(i), q.mine(stateTaken), stateWord(stateReady, 0, 0)) {
			q.count(khReturned)
		}
	}
	clear(q.held)
}

func (q *Queue) mine(state uint64) uint64 { return stateWord(state, q.peer, q.pid) }

func (q *Queue) slot(i uint64) []byte {
	off := i * q.geo.slotSize
	return q.data[off : off+q.geo.slotSize : off+q.geo.slotSize]
}

func (q *Queue) state(i uint64) *uint64 { return layout.Uint64(q.slot(i), slotOffState) }
func (q *Queue) seq(i uint64) *uint64   { return layout.Uint64(q.slot(i), slotOffSeq) }
func (q *Queue) word(off int) *uint64   { return layout.Uint64(q.hdr, off) }
func (q *Queue) count(off int)          { atomic.AddUint64(q.word(off), 1) }

// enter pins the mapping for one operation: ErrClosed once Close has begun, ErrReadOnly
// for a writing operation on an inspected queue.
func (q *Queue) enter(writes bool) error {
	if writes && q.readOnly {
		return ErrReadOnly
	}
	if err := q.seg.Pin(); err != nil {
		return ErrClosed
	}
	return nil
}

// liveness answers "is holder (peer, pid) running?" for one scan, listing the peer table
// once while every holder it is asked about is alive. Our own holder id is alive; an error
// listing the table reads as alive (never take over from a process that may be running).
// "Dead" is only answered from a listing made after the caller loaded the holder's state
// word: a process that registered after an earlier listing and then took a slot is not in
// that listing, yet running.
type liveness struct {
	q     *Queue
	peers []shm.PeerInfo
	err   error
	done  bool
}

func (l *liveness) alive(peer, pid int) bool {
	if peer == l.q.peer && pid == l.q.pid && !l.q.readOnly {
		return true
	}
	fresh := !l.done
	if fresh {
		l.list()
	}
	if a := l.lookup(peer, pid); a || fresh {
		return a
	}
	l.list() // dead by a listing that may predate the state word: list again
	return l.lookup(peer, pid)
}

func (l *liveness) list() {
	l.peers, l.err = l.q.seg.Peers()
	l.done = true
}

func (l *liveness) lookup(peer, pid int) bool {
	if l.err != nil {
		return true
	}
	for _, p := range l.peers {
		if p.Index == peer {
			return p.Alive && p.PID == pid
		}
	}
	return false
}

// stateCorrupt is what repair reports for a state word no peer writes: no state, so that
// no caller takes the slot for Free or Ready (a CAS from the plain word would never succeed).
const stateCorrupt = ^uint64(0)

// repair makes slot i usable again if its holder died: a Writing slot becomes Free, a
// Taken one Ready. w is the state word just loaded. It reports the state the slot is in
// afterwards as far as this call knows (stateCorrupt for a word no peer writes).
func (q *Queue) repair(i uint64, w uint64, live *liveness) uint64 {
	state, peer, pid, ok := unpackState(w)
	if !ok {
		return stateCorrupt
	}
	if (state != stateWriting && state != stateTaken) || live.alive(peer, pid) {
		return state
	}
	if state == stateWriting {
		if atomic.CompareAndSwapUint64(q.state(i), w, stateFree) {
			q.count(khAbandoned)
			return stateFree
		}
	} else if atomic.CompareAndSwapUint64(q.state(i), w, stateWord(stateReady, 0, 0)) {
		q.count(khRecovered)
		return stateReady
	}
	return state
}

// Put adds e to the queue (its Seq is assigned; a zero DeadAt becomes now). It never
// blocks. Errors: ErrFull when every slot holds an entry, ErrTooLarge (see MaxEntry,
// MaxOriginLen), ErrReadOnly, ErrClosed, shm.ErrTruncated.
func (q *Queue) Put(e Entry) (err error) {
	if len(e.Origin) > MaxOriginLen {
		return fmt.Errorf("%w: origin of %d bytes (at most %d)", ErrTooLarge, len(e.Origin), MaxOriginLen)
	}
	if n := recordSize(&e) - recordHeader; n > q.MaxEntry() {
		return fmt.Errorf("%w: entry of %d bytes, slot room %d", ErrTooLarge, n, q.MaxEntry())
	}
	if e.DeadAt.IsZero() {
		e.DeadAt = time.Now()
	}
	if err := q.enter(true); err != nil {
		return err
	}
	defer q.seg.Unpin()
	defer guardFaults(q.seg.Name(), &err)()
	// Start the search where the sequence counter points, so that Puts spread over the
	// slots instead of all racing for the first free one.
	start := atomic.LoadUint64(q.word(khNextSeq))
	var live liveness
	live.q = q
	for round := 0; round < 2; round++ {
		for k := uint64(0); k < q.geo.slots; k++ {
			i := (start + k) % q.geo.slots
			w := atomic.LoadUint64(q.state(i))
			if round == 1 && w != stateFree {
				if q.repair(i, w, &live) != stateFree {
					continue
				}
				w = stateFree
			}
			if w != stateFree || !atomic.CompareAndSwapUint64(q.state(i), stateFree, q.mine(stateWriting)) {
				continue
			}
			putRecord(q.slot(i)[slotHeader:], &e)
			seq := atomic.AddUint64(q.word(khNextSeq), 1)
			atomic.StoreUint64(q.seq(i), seq)
			// The entry and its sequence number are stored before the state says Ready
			// (sequentially consistent atomics): whoever loads Ready sees them.
			atomic.StoreUint64(q.state(i), stateWord(stateReady, 0, 0))
			q.count(khPuts)
			return nil
		}
	}
	q.count(khFull)
	return fmt.Errorf("%w: %d entries", ErrFull, q.geo.slots)
}

// Take hands the oldest ready entry to fn and removes it if fn returns nil; if fn returns
// an error the entry goes back, still oldest, and Take returns that error. While fn runs
// the entry is Taken: List shows it, no other Take gets it, and if this process dies the
// entry becomes Ready again (at-least-once). fn runs on the calling goroutine without any
// lock held; it may call other methods.
//
// Errors: ErrEmpty when no entry is ready; fn's error; ErrCorrupt for a corrupt entry
// (which is dropped and counted: nobody could replay it); ErrClosed (also when Close came
// while fn ran: the entry is then given back even if fn succeeded); ErrReadOnly.
func (q *Queue) Take(fn func(Entry) error) error {
	return q.take(fn, ^uint64(0))
}

// take is Take for entries with a sequence number below limit.
func (q *Queue) take(fn func(Entry) error, limit uint64) error {
	i, e, err := q.claim(limit)
	if err != nil {
		return err
	}
	finished := false
	defer func() {
		if !finished { // fn panicked: give the entry back, then let the panic go on
			_ = q.finish(i, e.Seq, errPanicked)
		}
	}()
	ferr := fn(e)
	finished = true
	return q.finish(i, e.Seq, ferr)
}

var errPanicked = errors.New("the function panicked")

// claim finds the oldest ready entry below limit, marks it Taken by us and copies it.
func (q *Queue) claim(limit uint64) (_ uint64, _ Entry, err error) {
	if err := q.enter(true); err != nil {
		return 0, Entry{}, err
	}
	defer q.seg.Unpin()
	defer guardFaults(q.seg.Name(), &err)()
	var live liveness
	live.q = q
	for {
		best, bestSeq, found := uint64(0), uint64(0), false
		for i := range q.geo.slots {
			w := atomic.LoadUint64(q.state(i))
			state := q.repair(i, w, &live)
			if state != stateReady {
				continue
			}
			if s := atomic.LoadUint64(q.seq(i)); s < limit && (!found || s < bestSeq) {
				best, bestSeq, found = i, s, true
			}
		}
		if !found {
			return 0, Entry{}, ErrEmpty
		}
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return 0, Entry{}, ErrClosed
		}
		if !atomic.CompareAndSwapUint64(q.state(best), stateWord(stateReady, 0, 0), q.mine(stateTaken)) {
			q.mu.Unlock()
			continue // another taker or a purge got it: look again
		}
		q.held[best] = true
		q.mu.Unlock()
		// The slot is ours now: nobody writes it until we free it. Copy, then check.
		seq := atomic.LoadUint64(q.seq(best))
		rec := append([]byte(nil), q.slot(best)[slotHeader:]...)
		e, perr := parseRecord(rec)
		if perr != nil {
			q.mu.Lock()
			if q.held[best] && atomic.CompareAndSwapUint64(q.state(best), q.mine(stateTaken), stateFree) {
				q.count(khCorrupt)
			}
			delete(q.held, best)
			q.mu.Unlock()
			return 0, Entry{}, fmt.Errorf("entry %d dropped: %w", seq, perr)
		}
		e.Seq = seq
		return best, e, nil
	}
}

// finish removes slot i's entry (ferr nil) or gives it back.
func (q *Queue) finish(i, seq uint64, ferr error) (err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.held[i] {
		return ErrClosed // Close gave it back meanwhile
	}
	if err := q.seg.Pin(); err != nil {
		return ErrClosed // Close has begun: its hook, waiting for q.mu, gives the entry back
	}
	defer q.seg.Unpin()
	delete(q.held, i)
	defer guardFaults(q.seg.Name(), &err)()
	to, ctr := uint64(stateFree), khTaken
	if ferr != nil {
		to, ctr = stateWord(stateReady, 0, 0), khReturned
	}
	if !atomic.CompareAndSwapUint64(q.state(i), q.mine(stateTaken), to) {
		return fmt.Errorf("%w: entry %d was taken from us (state %#x)", ErrCorrupt, seq, atomic.LoadUint64(q.state(i)))
	}
	q.count(ctr)
	return ferr
}

// Replay takes the entries that are in the queue when it starts, oldest first, one at a
// time, like Take: each is removed once fn returns nil. It stops at fn's first error
// (that entry stays, oldest) and returns it, or when ctx ends (ctx.Err()). Corrupt entries
// are dropped and reported (errors wrapping ErrCorrupt, joined) without stopping. It
// returns how many entries fn accepted. Entries Put meanwhile are left for later.
func (q *Queue) Replay(ctx context.Context, fn func(Entry) error) (int, error) {
	if err := q.enter(true); err != nil {
		return 0, err
	}
	limit := atomic.LoadUint64(q.word(khNextSeq)) + 1 // entries numbered up to now
	q.seg.Unpin()
	n := 0
	var corrupt []error
	for {
		if err := ctx.Err(); err != nil {
			return n, errors.Join(append(corrupt, err)...)
		}
		err := q.take(fn, limit)
		switch {
		case err == nil:
			n++
		case errors.Is(err, ErrEmpty):
			return n, errors.Join(corrupt...)
		case errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrClosed):
			corrupt = append(corrupt, err)
		default:
			return n, errors.Join(append(corrupt, err)...)
		}
	}
}

// Purge removes every entry that is not held by a live Take, and returns how many. Errors:
// ErrReadOnly, ErrClosed, shm.ErrTruncated.
func (q *Queue) Purge() (n int, err error) {
	if err := q.enter(true); err != nil {
		return 0, err
	}
	defer q.seg.Unpin()
	defer guardFaults(q.seg.Name(), &err)()
	var live liveness
	live.q = q
	for i := range q.geo.slots {
		w := atomic.LoadUint64(q.state(i))
		if q.repair(i, w, &live) != stateReady {
			continue
		}
		if atomic.CompareAndSwapUint64(q.state(i), stateWord(stateReady, 0, 0), stateFree) {
			q.count(khPurged)
			n++
		}
	}
	return n, nil
}

// Len is the number of entries in the queue, ready and taken. Errors: ErrClosed,
// ErrCorrupt for a state word no peer writes, shm.ErrTruncated.
func (q *Queue) Len() (n int, err error) {
	if err := q.enter(false); err != nil {
		return 0, err
	}
	defer q.seg.Unpin()
	defer guardFaults(q.seg.Name(), &err)()
	for i := range q.geo.slots {
		state, _, _, ok := unpackState(atomic.LoadUint64(q.state(i)))
		if !ok {
			return n, fmt.Errorf("%w: slot %d has state word %#x", ErrCorrupt, i, atomic.LoadUint64(q.state(i)))
		}
		if state == stateReady || state == stateTaken {
			n++
		}
	}
	return n, nil
}

// List copies every entry, ready and taken, oldest first, without consuming or changing
// anything (it works on a Queue from Inspect). An entry taken and removed while List
// copies it is left out. A corrupt slot is left out and reported: the error wraps
// ErrCorrupt, and the entries are returned with it.
func (q *Queue) List() (_ []Entry, err error) {
	if err := q.enter(false); err != nil {
		return nil, err
	}
	defer q.seg.Unpin()
	defer guardFaults(q.seg.Name(), &err)()
	var live liveness
	live.q = q
	var out []Entry
	var bad []error
	buf := make([]byte, q.geo.slotSize-slotHeader)
	for i := range q.geo.slots {
		e, ok, err := q.copyEntry(i, buf, &live)
		if err != nil {
			bad = append(bad, err)
		}
		if ok {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	return out, errors.Join(bad...)
}

// copyEntry copies slot i's entry, if it holds one, seqlock-style: the state word and the
// sequence number loaded before and after the copy must agree, else the slot changed
// under the copy (taken, freed, reused) and the copy is tried again, a few times.
func (q *Queue) copyEntry(i uint64, buf []byte, live *liveness) (Entry, bool, error) {
	for try := 0; try < 4; try++ {
		w := atomic.LoadUint64(q.state(i))
		state, peer, pid, ok := unpackState(w)
		if !ok {
			return Entry{}, false, fmt.Errorf("%w: slot %d has state word %#x", ErrCorrupt, i, w)
		}
		if state != stateReady && state != stateTaken {
			return Entry{}, false, nil
		}
		seq := atomic.LoadUint64(q.seq(i))
		copy(buf, q.slot(i)[slotHeader:])
		if atomic.LoadUint64(q.seq(i)) != seq || atomic.LoadUint64(q.state(i)) != w {
			continue
		}
		e, err := parseRecord(buf)
		if err != nil {
			return Entry{}, false, fmt.Errorf("slot %d (entry %d): %w", i, seq, err)
		}
		e.Seq, e.State = seq, Ready
		if state == stateTaken {
			e.State, e.HolderPID, e.HolderDead = Taken, pid, !live.alive(peer, pid)
		}
		return e, true, nil
	}
	return Entry{}, false, nil // changing too fast: it is being taken and freed
}

// Stats reads the shared counters and counts the entries.
func (q *Queue) Stats() (Stats, error) {
	n, err := q.Len()
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return Stats{}, err
	}
	if perr := q.enter(false); perr != nil {
		return Stats{}, perr
	}
	defer q.seg.Unpin()
	ld := func(off int) uint64 { return atomic.LoadUint64(q.word(off)) }
	return Stats{Len: n, Cap: q.Cap(), Puts: ld(khPuts), Taken: ld(khTaken), Returned: ld(khReturned),
		Recovered: ld(khRecovered), Purged: ld(khPurged), Full: ld(khFull), Corrupt: ld(khCorrupt),
		Abandoned: ld(khAbandoned)}, err
}
