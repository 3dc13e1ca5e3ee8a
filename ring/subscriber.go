package ring

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"

	"github.com/shmq/shmq/internal/fence"
	"github.com/shmq/shmq/shm"
)

// Start says where a new subscription begins reading. The zero value is FromLatest.
type Start struct {
	from uint8 // 0 latest, 1 oldest, 2 sequence
	seq  uint64
}

var (
	// FromLatest starts with the next record published: only what comes next.
	FromLatest = Start{}
	// FromOldest starts with the oldest record the ring still holds: history for late
	// joiners.
	FromOldest = Start{from: 1}
)

// FromSequence starts at sequence number seq (the published count when that record was
// published: Record sequence numbers start at 0). A sequence the ring no longer holds starts
// at the oldest one held, and the first read reports the difference as a *LagError; a
// sequence not yet published waits for it.
func FromSequence(seq uint64) Start { return Start{from: 2, seq: seq} }

// SubscribeOptions configures a subscription. The zero value is an anonymous subscription
// from the next record published, with the default wait.
type SubscribeOptions struct {
	// Name makes the subscription durable: it keeps its position under this name (up to 63
	// bytes) after its subscriber closes or dies, and a later Subscribe with the same name
	// resumes there, whatever Start says. Only one live subscriber holds a name at a time
	// (ErrBusy). Empty: an anonymous subscription, gone when its subscriber is.
	Name string
	// Start is where a new subscription begins.
	Start Start
	// Wait is how Next and Drain wait for records.
	Wait Wait
}

// Subscriber reads every record of a topic published after its start, in order, in place,
// at its own position, which it keeps in its subscription entry.
//
// Delivery: under Block nothing is lost while the subscriber lives (publishers wait for it).
// Under Overwrite a subscriber that falls a ring behind gets a *LagError (ErrLagged) with
// the exact count it missed and continues from the oldest record held; a record it reads in
// place (Next, Drain) may be overwritten while it reads it: call Validate before trusting
// what was read, or use Read, which copies and validates. Under Latest, Next skips to the
// newest record. A durable subscription that resumes gets again the records its last
// subscriber had borrowed and not released (at least once), never one it released.
//
// A topic has no end of stream: Next waits for publishers that may come later. Like every
// Reader, a Subscriber is for one goroutine at a time, except Close.
type Subscriber struct {
	topic
	idx     int    // subscription entry
	state   uint64 // the entry's state word while this subscriber holds it
	posW    *uint64
	missedW *uint64
	name    string

	pos        uint64 // next sequence to borrow
	released   uint64 // position stored in the entry: everything before it released
	validated  uint64 // borrowed records (from released) known intact after use
	rejected   uint64 // borrowed records rejected
	bytes      uint64 // payload bytes borrowed
	tailCache  uint64 // the published count as last loaded
	pendingLag uint64 // records missed, to report with the next call
}

// Subscribe attaches a subscriber to the topic segment seg. It takes the topic lock for a
// moment (waiting, until ctx ends, while a publisher holds it) so that its start position is
// fixed before any publisher writes again. Errors: ErrBusy when a live subscriber holds the
// durable name, ErrSubscriptionsFull, shm.ErrInvalidName for a name too long, and those of
// NewPublisher.
func Subscribe(ctx context.Context, seg *shm.Segment, opts SubscribeOptions) (*Subscriber, error) {
	if len(opts.Name) > maxSubName {
		return nil, fmt.Errorf("%w: subscription name of %d bytes, at most %d", shm.ErrInvalidName, len(opts.Name), maxSubName)
	}
	s := &Subscriber{idx: -1, name: opts.Name}
	s.holds = func() bool { return s.pos != s.released }
	if err := s.attachTopic(seg, readerSide, Options{Wait: opts.Wait}, s.Close); err != nil {
		return nil, err
	}
	return s, s.finishAttach(s.join(ctx, opts.Start), nil)
}

// join takes a subscription entry under the topic lock: the durable one named, or a free
// one positioned at start.
func (s *Subscriber) join(ctx context.Context, start Start) error {
	if ctx == nil {
		ctx = context.Background()
	}
	s.reapDead() // before the lock, which publishers wait for: it lists the peer table
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	tail := atomic.LoadUint64(s.tail)
	oldest := tail - min(tail, s.slots.slots)
	me := s.loc.peer.Index()
	if s.name != "" {
		for mask := s.usedSubs(); mask != 0; mask &= mask - 1 {
			i := bits.TrailingZeros64(mask)
			entry := subEntry(s.hdr, i)
			w := atomic.LoadUint64(s.subState(i))
			if w&subDurable == 0 || readSubName(entry) != s.name {
				continue
			}
			if _, pid, held := subHolder(w); held {
				return fmt.Errorf("%w: durable subscription %q of %s is held by process %d", ErrBusy, s.name, s.seg.Name(), pid)
			}
			nw := subWord(w, true, me, s.pid)
			if !atomic.CompareAndSwapUint64(s.subState(i), w, nw) {
				return fmt.Errorf("%w: durable subscription %q changed while it was taken", ErrBusy, s.name)
			}
			s.take(i, nw, min(atomic.LoadUint64(s.subPos(i)), tail), oldest)
			return nil
		}
	}
	for i := 0; i < numSubs; i++ {
		w := atomic.LoadUint64(s.subState(i))
		if w != 0 {
			continue
		}
		pos := tail
		switch start.from {
		case 1:
			pos = oldest
		case 2:
			pos = start.seq
		}
		entry := subEntry(s.hdr, i)
		if s.name != "" {
			writeSubName(entry, s.name)
		}
		atomic.StoreUint64(subU64(entry, subPos), pos)
		atomic.StoreUint64(subU64(entry, subMissed), 0)
		nw := subWord(w, s.name != "", me, s.pid)
		atomic.OrUint64(s.used, 1<<uint(i)) // first: a joiner dying between the two leaves no entry unseen
		if !atomic.CompareAndSwapUint64(s.subState(i), w, nw) {
			continue
		}
		s.take(i, nw, pos, oldest)
		return nil
	}
	return fmt.Errorf("%w: %s", ErrSubscriptionsFull, s.seg.Name())
}

// take makes entry i this subscriber's, at pos (moved up to oldest if the ring no longer
// holds it, the difference reported as missed), and makes lock-holding publishers rescan.
func (s *Subscriber) take(i int, state, pos, oldest uint64) {
	s.idx, s.state = i, state
	entry := subEntry(s.hdr, i)
	s.posW, s.missedW = subU64(entry, subPos), subU64(entry, subMissed)
	if pos < oldest {
		s.pendingLag = oldest - pos
		atomic.AddUint64(s.missedW, s.pendingLag)
		s.stats.add(ctrDrops, s.pendingLag)
		pos = oldest
	}
	atomic.StoreUint64(s.posW, pos)
	s.pos, s.released, s.tailCache = pos, pos, pos
	atomic.AddUint64(s.gen, 1)
}

// Name is the durable subscription's name, empty for an anonymous one.
func (s *Subscriber) Name() string { return s.name }

// Position is the sequence number of the next record Next would borrow.
func (s *Subscriber) Position() uint64 { return s.pos }

// takeLag returns the pending *LagError, if any, and clears it.
func (s *Subscriber) takeLag() error {
	if s.pendingLag == 0 {
		return nil
	}
	err := &LagError{Missed: s.pendingLag}
	s.pendingLag = 0
	return err
}

// lap moves the subscriber past what a publisher overwrote: to the oldest record the ring
// still holds (by tail as loaded), at from or later, dropping the records borrowed and not
// yet validated, and counts what it missed for the next call to report. The records
// validated count as read.
func (s *Subscriber) lap(tail, from uint64) {
	first := s.released + s.validated
	resume := max(tail-min(tail, s.slots.slots), from, first)
	missed := resume - first
	s.pendingLag += missed
	atomic.AddUint64(s.missedW, missed)
	s.stats.add(ctrDrops, missed)
	s.pos = resume
	s.releaseTo(resume, s.validated)
}

// validate checks, after use, that the records borrowed are intact: records are
// overwritten in order, so the oldest of them tells (a sequence lock's read side), and it
// is checked every time, as a record checked before may be read again later. When they are
// not, the subscriber laps.
func (s *Subscriber) validate() {
	first := s.released // the oldest borrowed: if it is intact, so are the later ones
	if first == s.pos {
		return
	}
	fence.LoadLoad() // the caller's reads of the records come before the check
	if atomic.LoadUint64(slotSeq(s.slots.slot(first))) == topicMark(first) {
		s.validated = s.pos - s.released
		return
	}
	s.lap(atomic.LoadUint64(s.tail), s.pos)
}

// releaseTo stores the position pos, of which read records were read, and wakes Block
// publishers waiting for room.
func (s *Subscriber) releaseTo(pos, read uint64) {
	if pos == s.released {
		return
	}
	if s.policy == Block {
		atomic.StoreUint64(s.posW, pos) // pairs with a sleeping publisher's mark (eventcount)
		s.notify(s.spaceEvent(), 0)
	} else {
		fence.StoreRelease64(s.posW, pos) // only read by ReadTopicStats
	}
	s.stats.add(ctrMessages, read-min(read, s.rejected))
	s.stats.add(ctrRejected, min(read, s.rejected))
	s.stats.add(ctrBytes, s.bytes)
	s.released, s.validated, s.rejected, s.bytes = pos, 0, 0, 0
}

func (s *Subscriber) tryNext() (Record, error) {
	if s.validated != s.pos-s.released {
		s.validate() // records borrowed since the last check (Drain checks each after use)
	}
	if err := s.takeLag(); err != nil {
		return Record{}, err
	}
	seq := s.pos
	if seq >= s.tailCache {
		if s.tailCache = atomic.LoadUint64(s.tail); seq >= s.tailCache {
			s.stats.add(ctrEmpty, 1)
			return Record{}, ErrEmpty
		}
	}
	tail := s.tailCache
	if s.policy == Latest && s.pos == s.released && tail-1 > seq {
		// Conflate: only the newest record matters. What is skipped is counted, not reported.
		skipped := tail - 1 - seq
		atomic.AddUint64(s.missedW, skipped)
		s.pos = tail - 1
		s.releaseTo(s.pos, 0)
		seq = s.pos
	}
	if tail-seq > s.slots.slots {
		s.lap(tail, seq+1)
		return Record{}, s.takeLag()
	}
	slot := s.slots.slot(seq)
	switch m := atomic.LoadUint64(slotSeq(slot)); {
	case m > topicMark(seq):
		s.lap(atomic.LoadUint64(s.tail), seq+1)
		return Record{}, s.takeLag()
	case m < topicMark(seq):
		s.skipCorrupt()
		return Record{}, fmt.Errorf("%w: topic record %d is published but its slot says %d", ErrCorrupt, seq, m)
	}
	rec, err := parseSlot(slot, seq)
	if err == nil && rec.skip {
		err = fmt.Errorf("%w: topic record %d is marked as a skip", ErrCorrupt, seq)
	}
	if err != nil {
		s.skipCorrupt()
		return Record{}, err
	}
	s.pos++
	s.bytes += uint64(rec.n)
	return Record{Type: rec.typ, Data: slot[slotHeader : slotHeader+rec.n : slotHeader+rec.n]}, nil
}

// skipCorrupt passes the record at pos, which no correct publisher wrote, counting it as
// missed, so that the subscriber does not stop there for good. With records borrowed it
// waits for their Release: passing it releases everything before it.
func (s *Subscriber) skipCorrupt() {
	if s.pos != s.released {
		return
	}
	s.pos++
	atomic.AddUint64(s.missedW, 1)
	s.stats.add(ctrDrops, 1)
	s.releaseTo(s.pos, 0)
}

func (s *Subscriber) ready() bool {
	return s.pendingLag > 0 || atomic.LoadUint64(s.tail) > s.pos
}

func (s *Subscriber) awaitData(ctx context.Context) error {
	return s.wait.await(ctx, s.dataEvent(), s.ready, func(bool) error { return nil })
}

// Maintain has nothing to check: a topic outlives its publishers, and subscribers never
// wait for each other. It returns ErrClosed after Close, else nil.
func (s *Subscriber) Maintain() error { return maintain(&s.endpoint, func(bool) error { return nil }) }

// check is validate for the operations shared with other kinds (read.go): nil when the
// records borrowed are intact, else the *LagError.
func (s *Subscriber) check() error {
	s.validate()
	return s.takeLag()
}

func (s *Subscriber) release() {
	s.validate()
	s.releaseTo(s.pos, s.pos-s.released)
}
func (s *Subscriber) reject()       { s.rejected++ }
func (s *Subscriber) unborrow()     { s.pos-- }
func (s *Subscriber) forget()       { s.pos = s.released }
func (s *Subscriber) ep() *endpoint { return &s.endpoint }

// Validate reports whether the records borrowed since the last Release are intact: nil, or
// the *LagError of a subscriber that a publisher lapped while it read them in place (they
// are then dropped and counted as missed). Only Overwrite and Latest topics can fail it.
func (s *Subscriber) Validate() error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	return s.check()
}

// Release gives back the records borrowed. Records that turn out overwritten while they
// were borrowed are reported, as a *LagError, by the next call.
func (s *Subscriber) Release() {
	if s.enter() != nil {
		s.afterClose(s.forget)
		return
	}
	defer s.leave()
	s.release()
}

// Reject is Release counting the last record borrowed as rejected.
func (s *Subscriber) Reject() {
	if s.enter() != nil {
		s.afterClose(s.forget)
		return
	}
	defer s.leave()
	s.reject()
	s.release()
}

// TryNext is Next that never waits: ErrEmpty.
func (s *Subscriber) TryNext() (Record, error) { return next(s, nil) }

// Next borrows the next record in place, waiting for one. Earlier records stay borrowed
// until Release. Errors: *LagError (ErrLagged), ErrCorrupt for a record no correct
// publisher wrote (passed over), ctx's error, ErrClosed.
func (s *Subscriber) Next(ctx context.Context) (Record, error) { return next(s, ctx) }

// TryRead is Read that never waits.
func (s *Subscriber) TryRead(dst []byte) (int, uint32, error) { return read(s, nil, dst) }

// Read copies the next record into dst, validates the copy and releases the record.
func (s *Subscriber) Read(ctx context.Context, dst []byte) (int, uint32, error) {
	return read(s, ctx, dst)
}

// Drain hands fn the available records in place, up to max, validating each after fn
// returns, and releases them with one store. A record found overwritten ends Drain with a
// *LagError and is not counted in its result.
func (s *Subscriber) Drain(ctx context.Context, fn func(Record) error, max int) (int, error) {
	return drain(s, ctx, fn, max)
}

// Ready reports whether Next would return at once.
func (s *Subscriber) Ready() bool {
	if s.enter() != nil {
		return true // the call fails at once: ErrClosed
	}
	defer s.leave()
	return s.ready()
}

// Arm marks the subscriber as waiting for records, for an event loop; see Reader.
func (s *Subscriber) Arm() (Wake, bool, error) { return s.arm(s.ready) }

// Disarm undoes Arm.
func (s *Subscriber) Disarm() { s.disarm() }

// Load copies the newest record of the topic into dst, whatever this subscriber's position:
// the read of a one-value blackboard (Latest). It never returns a torn value and never makes
// a publisher wait. It returns the record's sequence number; ErrEmpty before the first
// publish, ErrShortBuffer when dst is too small.
func (s *Subscriber) Load(dst []byte) (n int, typ uint32, seq uint64, err error) {
	if err := s.enter(); err != nil {
		return 0, 0, 0, err
	}
	defer s.leave()
	for try := 0; ; try++ {
		if try == loadTries {
			return 0, 0, 0, fmt.Errorf("%w: no intact newest record of %s in %d tries", ErrCorrupt, s.seg.Name(), loadTries)
		}
		tail := atomic.LoadUint64(s.tail)
		if tail == 0 {
			return 0, 0, 0, ErrEmpty
		}
		seq = tail - 1
		slot := s.slots.slot(seq)
		if atomic.LoadUint64(slotSeq(slot)) != topicMark(seq) {
			continue // being overwritten already: a newer record is on its way
		}
		rec, err := parseSlot(slot, seq)
		if err != nil || rec.skip {
			continue // torn header: the check below fails too, or the next tail differs
		}
		if len(dst) < int(rec.n) {
			fence.LoadLoad()
			if atomic.LoadUint64(slotSeq(slot)) != topicMark(seq) {
				continue // the length came from a record being overwritten
			}
			return 0, 0, 0, fmt.Errorf("%w: record of %d bytes, buffer of %d", ErrShortBuffer, rec.n, len(dst))
		}
		n = copy(dst, slot[slotHeader:slotHeader+rec.n])
		fence.LoadLoad()
		if atomic.LoadUint64(slotSeq(slot)) == topicMark(seq) {
			return n, rec.typ, seq, nil
		}
		if s.isClosed() {
			return 0, 0, 0, ErrClosed
		}
	}
}

// loadTries bounds Load's retries: a publisher overwrites the newest record only after a
// whole ring of newer ones, so failing this often means a slot no correct publisher wrote.
const loadTries = 1 << 16

// Close detaches the subscriber. A durable subscription keeps its position (records still
// borrowed are delivered again to the next subscriber under its name); an anonymous one is
// freed.
func (s *Subscriber) Close() error { return s.close(s.leaveSub) }

func (s *Subscriber) leaveSub() {
	if s.idx < 0 {
		return
	}
	next := uint64(0)
	if s.name != "" {
		next = subWord(s.state, true, -1, 0)
	}
	if atomic.CompareAndSwapUint64(s.subState(s.idx), s.state, next) {
		s.notify(s.spaceEvent(), 0) // a Block publisher waiting for this subscriber (the CAS was the publish)
	}
	s.idx = -1
}

// ErrNoSubscription is returned by Unsubscribe for a durable name the topic does not have.
var ErrNoSubscription = errors.New("topic has no durable subscription of that name")

// Unsubscribe deletes the durable subscription name of the topic seg, so that its entry
// can be reused (a topic has 64). ErrBusy while a live subscriber holds it (a holder that
// died is let go of first), ErrNoSubscription when there is none. It does not wait.
func Unsubscribe(seg *shm.Segment, name string) error {
	var t topic
	if err := t.attachTopic(seg, readerSide, Options{}, func() error { return t.close(nil) }); err != nil {
		return err
	}
	err := t.unsubscribe(name)
	_ = t.finishAttach(nil, nil)
	_ = t.close(nil)
	return err
}

func (t *topic) unsubscribe(name string) error {
	t.reapDead()
	for mask := t.usedSubs(); mask != 0; mask &= mask - 1 {
		i := bits.TrailingZeros64(mask)
		w := atomic.LoadUint64(t.subState(i))
		if w&subDurable == 0 || readSubName(subEntry(t.hdr, i)) != name {
			continue
		}
		if _, pid, held := subHolder(w); held {
			return fmt.Errorf("%w: durable subscription %q of %s is held by process %d", ErrBusy, name, t.seg.Name(), pid)
		}
		if !atomic.CompareAndSwapUint64(t.subState(i), w, 0) {
			return fmt.Errorf("%w: durable subscription %q of %s was taken meanwhile", ErrBusy, name, t.seg.Name())
		}
		return nil
	}
	return fmt.Errorf("%w: %q in %s", ErrNoSubscription, name, t.seg.Name())
}
