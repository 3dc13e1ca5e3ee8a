package ring

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/internal/fence"
	"github.com/shmq/shmq/shm"
)

// ErrLagged matches a *LagError: a subscriber missed records that were overwritten before
// it read them (or while it read them in place).
var ErrLagged = errors.New("topic subscriber lagged")

// LagError says how many records a subscriber missed. The subscriber has moved on to the
// oldest record still in the ring; the next call continues from there. Missed counts
// records it never received intact: those overwritten before it reached them, and any it
// had borrowed in place (Next, Drain) that a publisher began to overwrite before the
// subscriber had validated them (Validate, Release, the next call).
type LagError struct {
	Missed uint64
}

func (e *LagError) Error() string {
	return fmt.Sprintf("topic subscriber lagged: %d records overwritten before they were read", e.Missed)
}

// Is makes errors.Is(err, ErrLagged) hold.
func (e *LagError) Is(target error) bool { return target == ErrLagged }

// ErrSubscriptionsFull is returned by Subscribe when every subscription entry of the topic
// is taken by a live subscriber or a durable subscription.
var ErrSubscriptionsFull = fmt.Errorf("topic has no free subscription entry (%d per topic)", numSubs)

// topic is what publishers and subscribers share: the endpoint, the slots, and the topic
// lock and subscription table of the kind header.
//
// Atomics: the published count (tail) is stored by lock holders only, with a sequentially
// consistent store after the records' payloads (it pairs with the subscribers' loads and,
// as the eventcount's publish, with their marks as sleepers); the lock word is taken with a
// CAS and released with a release store; subscription words change by CAS, positions by
// their holder's store.
type topic struct {
	endpoint
	slots  mpmcSlots
	tail   *uint64
	lockW  *uint64
	gen    *uint64
	used   *uint64
	pid    int
	policy Policy

	held      uint64    // the lock word while this endpoint holds the lock, else 0
	lastCheck time.Time // when the lock's holder was last checked for liveness
	lastReap  time.Time // when reapEvery last reaped
}

func (t *topic) attachTopic(seg *shm.Segment, sd side, opts Options, closer func() error) error {
	if err := t.attach(seg, Topic, sd, 0, opts, closer); err != nil {
		return err
	}
	t.slots = mpmcSlots{mem: t.data, slots: t.geo.slots, slotSize: t.geo.slotSize}
	t.tail, t.lockW, t.gen, t.used = t.u64(offWritePos), t.u64(offTopicLock), t.u64(offSubsGen), t.u64(offSubsUsed)
	t.pid = os.Getpid()
	t.policy = t.geo.policy
	return nil
}

// tryLock takes the topic lock if it is free.
func (t *topic) tryLock() bool {
	w := atomic.LoadUint64(t.lockW)
	if _, _, held := lockHolder(w); held {
		return false
	}
	return t.lockFrom(w)
}

// lockFrom takes the lock with a CAS from w, the value last seen.
func (t *topic) lockFrom(w uint64) bool {
	nw := lockWord(w, t.loc.peer.Index(), t.pid)
	if atomic.CompareAndSwapUint64(t.lockW, w, nw) {
		t.held = nw
		return true
	}
	return false
}

// due reports whether livenessInterval has passed since *last, and if so restarts it: the
// pace of the checks that list the peer table.
func due(last *time.Time) bool {
	now := time.Now()
	if now.Sub(*last) < livenessInterval {
		return false
	}
	*last = now
	return true
}

// takeDeadLock takes the lock over if its holder's process is dead, looking at most once
// per livenessInterval (it lists the peer table).
func (t *topic) takeDeadLock() bool {
	if !due(&t.lastCheck) {
		return false
	}
	w := atomic.LoadUint64(t.lockW)
	peer, pid, held := lockHolder(w)
	if !held || t.processAlive(peer, pid) {
		return false
	}
	return t.lockFrom(w)
}

// processAlive reports whether peer entry i is held by the running process pid. An error
// listing the table reads as alive: never take over from a process that may be running.
func (t *topic) processAlive(i, pid int) bool {
	peers, err := t.seg.Peers()
	if err != nil {
		return true
	}
	for _, p := range peers {
		if p.Index == i {
			return p.Alive && p.PID == pid
		}
	}
	return false
}

// lock takes the topic lock, waiting while a live holder has it: spinning briefly (a lock
// is held for one record or batch), then sleeping in growing steps up to a millisecond. A
// dead holder's lock is taken over within about livenessInterval. With a nil ctx it tries
// for a few microseconds only and returns ErrFull. ErrClosed after Close.
func (t *topic) lock(ctx context.Context) error {
	pause := time.Microsecond
	for i := 0; ; i++ {
		if t.tryLock() {
			return nil
		}
		if t.isClosed() {
			return ErrClosed
		}
		switch {
		case i < 64:
			continue
		case i < 128:
			runtime.Gosched()
			continue
		}
		if t.takeDeadLock() {
			return nil
		}
		if ctx == nil {
			return ErrFull
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Millisecond)
	}
}

// unlock releases the lock with a release store (the stores made under it happen before).
// Only the holder stores, and a peer takes the lock over only from a holder whose process
// is dead, so no CAS is needed on this per-batch path.
func (t *topic) unlock() {
	if t.held != 0 {
		fence.StoreRelease64(t.lockW, lockFree(t.held))
		t.held = 0
	}
}

// subscription entry i's words.
func (t *topic) subState(i int) *uint64 { return subU64(subEntry(t.hdr, i), subState) }
func (t *topic) subPos(i int) *uint64   { return subU64(subEntry(t.hdr, i), subPos) }

// usedSubs returns the mask of entries that were ever taken (bits are never cleared, so a
// scan that skips the others misses no entry; see join).
func (t *topic) usedSubs() uint64 { return atomic.LoadUint64(t.used) }

// reapDead frees the subscriptions held by processes that died: an anonymous one becomes
// free, a durable one keeps its name and position with no holder. It lists the peer table
// once, so it runs on slow paths only (attach, and about every livenessInterval while a
// Block publisher waits). It reports whether it freed any.
//
// The subscription words are loaded before the peer table is listed: a subscriber attaches
// its peer entry before it takes a subscription, so every holder loaded here is in the
// listing if it lives. (Listed first, a subscriber attaching and joining in between would
// be missing from the listing and reaped alive.)
func (t *topic) reapDead() bool {
	type holding struct {
		i, peer, pid int
		w            uint64
	}
	var held []holding
	for mask := t.usedSubs(); mask != 0; mask &= mask - 1 {
		i := bits.TrailingZeros64(mask)
		w := atomic.LoadUint64(t.subState(i))
		if peer, pid, ok := subHolder(w); ok {
			held = append(held, holding{i, peer, pid, w})
		}
	}
	if len(held) == 0 {
		return false
	}
	peers, err := t.seg.Peers()
	if err != nil {
		return false
	}
	alive := map[int]int{} // peer index -> pid of the live process holding it
	for _, p := range peers {
		if p.Alive {
			alive[p.Index] = p.PID
		}
	}
	reaped := false
	for _, h := range held {
		if livePID, ok := alive[h.peer]; ok && livePID == h.pid {
			continue
		}
		next := uint64(0)
		if h.w&subDurable != 0 {
			next = subWord(h.w, true, -1, 0)
		}
		if atomic.CompareAndSwapUint64(t.subState(h.i), h.w, next) {
			reaped = true
		}
	}
	if reaped {
		t.notify(t.spaceEvent(), 0) // Block publishers waiting for the dead one (the CAS was the publish)
	}
	return reaped
}

// reapEvery runs reapDead at most once per livenessInterval (it lists the peer table) and
// reports whether it freed a subscription; then lock-holding publishers rescan (gen).
func (t *topic) reapEvery() bool {
	if !due(&t.lastReap) || !t.reapDead() {
		return false
	}
	atomic.AddUint64(t.gen, 1)
	return true
}

// minPosition is the lowest position of the subscriptions that hold publishers back (those
// with a holder), clamped to [tail - slots, tail]: at tail when there are none. Loads only.
func (t *topic) minPosition(tail uint64) uint64 {
	low := tail
	floor := tail - min(tail, t.slots.slots)
	for mask := t.usedSubs(); mask != 0; mask &= mask - 1 {
		i := bits.TrailingZeros64(mask)
		if _, _, held := subHolder(atomic.LoadUint64(t.subState(i))); !held {
			continue
		}
		p := atomic.LoadUint64(t.subPos(i))
		switch {
		case p > tail:
			p = tail // untrusted: a position past what was published holds nobody back
		case p < floor:
			p = floor
		}
		low = min(low, p)
	}
	return low
}

// TopicSubscription describes one subscription entry of a topic, for ReadTopicStats.
type TopicSubscription struct {
	Index    int    `json:"index"`
	Name     string `json:"name,omitempty"` // durable name; empty for an anonymous subscription
	Durable  bool   `json:"durable"`
	Held     bool   `json:"held"`          // a subscriber is attached to it
	PID      int    `json:"pid,omitempty"` // the holder's process
	Alive    bool   `json:"alive"`         // the holder's process is running
	Position uint64 `json:"position"`      // the next sequence it reads
	Lag      uint64 `json:"lag"`           // records published that it has not released
	Missed   uint64 `json:"missed"`        // records it missed (lapped, or skipped by Latest)
}

// TopicStats is a snapshot of a topic's shared state, read without changing anything.
type TopicStats struct {
	Policy        string              `json:"policy"`
	Published     uint64              `json:"published"` // records published so far (the next sequence)
	Oldest        uint64              `json:"oldest"`    // the oldest sequence the ring still holds
	Slots         uint64              `json:"slots"`
	SlotSize      uint64              `json:"slot_size"`
	LockHolderPID int                 `json:"lock_holder_pid,omitempty"`
	Subscriptions []TopicSubscription `json:"subscriptions"`
}

// ReadTopicStats reads the publish-subscribe state of a topic segment: ErrKind for another
// kind; like ReadStats otherwise (ReadStats gives a topic's counters and endpoint counts).
func ReadTopicStats(seg *shm.Segment) (_ TopicStats, err error) {
	defer viewFaults(seg, &err)()
	v, err := newView(seg)
	if err != nil {
		return TopicStats{}, err
	}
	if v.geo.kind != Topic {
		return TopicStats{}, fmt.Errorf("%w: segment %s is %v, not a topic", ErrKind, seg.Name(), v.geo.kind)
	}
	st := TopicStats{Policy: v.geo.policy.String(), Slots: v.geo.slots, SlotSize: v.geo.slotSize,
		Subscriptions: []TopicSubscription{}}
	st.Published = v.load(offWritePos)
	st.Oldest = st.Published - min(st.Published, v.geo.slots)
	if _, pid, held := lockHolder(v.load(offTopicLock)); held {
		st.LockHolderPID = pid
	}
	peers, err := seg.Peers()
	if err != nil {
		return st, err
	}
	for mask := v.load(offSubsUsed); mask != 0; mask &= mask - 1 {
		i := bits.TrailingZeros64(mask)
		entry := subEntry(v.hdr, i)
		w := atomic.LoadUint64(subU64(entry, subState))
		if w&subInUse == 0 {
			continue
		}
		s := TopicSubscription{Index: i, Durable: w&subDurable != 0,
			Position: atomic.LoadUint64(subU64(entry, subPos)), Missed: atomic.LoadUint64(subU64(entry, subMissed))}
		if s.Durable {
			s.Name = readSubName(entry)
		}
		if peer, pid, held := subHolder(w); held {
			s.Held, s.PID = true, pid
			for _, p := range peers {
				if p.Index == peer && p.PID == pid {
					s.Alive = p.Alive
				}
			}
		}
		if s.Position < st.Published {
			s.Lag = st.Published - s.Position
		}
		st.Subscriptions = append(st.Subscriptions, s)
	}
	return st, nil
}
