package ring

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"

	"github.com/shmq/shmq/internal/fence"
	"github.com/shmq/shmq/shm"
)

// Publisher writes records to a topic; every subscriber reads each of them in place.
//
// Publishers, in any number of processes, take turns by the topic lock: a publisher holds it
// from its first Reserve (or ReserveBatch) to Commit or Abort, so keep that window short.
// Uncontended, the lock costs one CAS and one store per batch; contended, publishers wait
// for each other (spinning, then sleeping), and a lock left by a process that died is taken
// over within about 100 ms. What a holder reserved but had not committed when it died is
// never seen by subscribers.
//
// Under Block a publisher waits (Reserve, Write) for the slowest live subscriber to release
// the oldest record; the Try forms return ErrFull instead. Under Overwrite and Latest it
// never waits for subscribers. Subscribers never see the end of a stream: a topic outlives
// its publishers.
//
// Like every Writer, a Publisher is for one goroutine at a time, except Close.
type Publisher struct {
	topic
	maxMsg int

	start    uint64 // while the lock is held: the published count when it was taken
	k        uint64 // records reserved since then
	bytes    uint64 // their payload bytes
	limit    uint64 // Block: sequences below it are free of every live subscriber
	limitGen uint64 // the subscription generation limit was computed at
}

// NewPublisher attaches a publisher to the topic segment seg. ErrKind for a segment that is
// not a topic, ErrVersion or ErrCorrupt for a descriptor this code does not read, ErrClosed
// for a closed segment, shm.ErrReadOnly for a segment opened by shm.Inspect.
func NewPublisher(seg *shm.Segment, opts Options) (*Publisher, error) {
	p := &Publisher{}
	p.holds = func() bool { return p.held != 0 && p.k > 0 }
	if err := p.attachTopic(seg, writerSide, opts, p.Close); err != nil {
		return nil, err
	}
	p.maxMsg = MPMCMaxMessage(uint32(p.geo.slotSize))
	return p, p.finishAttach(nil, nil)
}

// MaxMessage is the largest payload the topic carries.
func (p *Publisher) MaxMessage() int { return p.maxMsg }

// Policy is the topic's overflow policy.
func (p *Publisher) Policy() Policy { return p.policy }

// acquire takes the topic lock for a new batch (nil ctx: without waiting long).
func (p *Publisher) acquire(ctx context.Context) error {
	if p.held != 0 {
		return nil
	}
	if err := p.lock(ctx); err != nil {
		return err
	}
	p.start, p.k, p.bytes = atomic.LoadUint64(p.tail), 0, 0
	if p.policy == Block {
		if g := atomic.LoadUint64(p.gen); g != p.limitGen || p.limit == 0 {
			p.rescan(g)
		}
	}
	return nil
}

// rescan recomputes the Block limit from the subscriptions, under the lock.
func (p *Publisher) rescan(gen uint64) {
	p.limitGen = gen
	p.limit = p.minPosition(p.start) + p.slots.slots
}

// reserveLocked reserves the next record under the lock: ErrFull when Block has no room.
func (p *Publisher) reserveLocked(typ uint32, n int) ([]byte, error) {
	seq := p.start + p.k
	if p.k >= p.slots.slots-1 {
		// A batch fills at most all slots but one: two records of one batch never share a
		// slot, and the newest record published stays intact for Load while it is held.
		return nil, errBatchFull
	}
	if p.policy == Block && seq >= p.limit {
		if p.rescan(atomic.LoadUint64(p.gen)); seq >= p.limit && p.reapEvery() {
			p.rescan(atomic.LoadUint64(p.gen))
		}
		if seq >= p.limit {
			p.stats.add(ctrFull, 1)
			return nil, ErrFull
		}
	}
	slot := p.slots.slot(seq)
	// The mark goes before the payload (a sequence lock's write side): a subscriber that
	// validates record seq - slots after using it sees the mark if it saw any new byte.
	fence.StoreRelease64(slotSeq(slot), topicMark(seq))
	fence.StoreStore()
	putSlotHeader(slot, typ, n)
	p.k++
	p.bytes += uint64(n)
	return slot[slotHeader : slotHeader+n : slotHeader+n], nil
}

// errBatchFull is reserveLocked's ErrFull for a batch as large as the ring allows: waiting
// would not help, the batch must be committed first. Reserve returns it as ErrFull.
var errBatchFull = fmt.Errorf("%w: the batch fills the ring; commit it first", ErrFull)

func (p *Publisher) checkSize(n int) error {
	if n < 0 || n > p.maxMsg {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, n, p.maxMsg)
	}
	return nil
}

// TryReserve is Reserve that does not wait for room: ErrFull under Block when the slowest
// subscriber has not released the oldest record, or when another publisher holds the topic
// lock for longer than a few microseconds.
func (p *Publisher) TryReserve(typ uint32, n int) ([]byte, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	return p.reserve(nil, typ, n)
}

// Reserve returns room for a record of n bytes of type typ to fill in place; Commit
// publishes every record reserved since the last Commit. It takes the topic lock if this
// publisher does not hold it yet, and under Block waits for room. It returns ctx's error
// when ctx ends first, ErrTooLarge, ErrClosed.
func (p *Publisher) Reserve(ctx context.Context, typ uint32, n int) ([]byte, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	return p.reserve(ctx, typ, n)
}

func (p *Publisher) reserve(ctx context.Context, typ uint32, n int) ([]byte, error) {
	if err := p.checkSize(n); err != nil {
		return nil, err
	}
	for {
		if err := p.acquire(ctx); err != nil {
			return nil, err
		}
		buf, err := p.reserveLocked(typ, n)
		if err != ErrFull || ctx == nil {
			if err == errBatchFull {
				err = ErrFull
			}
			if err != nil && p.k == 0 {
				p.unlock()
			}
			return buf, err
		}
		if err := p.awaitRoom(ctx); err != nil {
			if p.k == 0 {
				p.unlock()
			}
			return nil, err
		}
	}
}

// awaitRoom waits, under Block, until the slowest live subscriber has released the record
// the next reservation would overwrite. Without records reserved it lets go of the lock
// meanwhile, so that other publishers and joining subscribers are not held up. About every
// livenessInterval it frees the subscriptions of dead processes. It runs under
// SetPanicOnFault (see fault.go): a truncated segment is an error.
func (p *Publisher) awaitRoom(ctx context.Context) (err error) {
	defer p.catch(debug.SetPanicOnFault(true), &err)
	next := p.start + p.k
	if p.k == 0 {
		p.unlock()
		next = atomic.LoadUint64(p.tail)
	}
	ready := func() bool {
		t := next
		if p.held == 0 {
			t = atomic.LoadUint64(p.tail) // another publisher may have published meanwhile
		}
		return p.minPosition(t)+p.slots.slots > t
	}
	return p.wait.await(ctx, p.spaceEvent(), ready, func(expensive bool) error {
		if expensive {
			p.reapEvery()
		}
		return nil
	})
}

// ReserveBatch reserves up to count records of n bytes each (at least one, waiting for it
// like Reserve; more only as far as room allows) and appends their payloads to dst.
func (p *Publisher) ReserveBatch(ctx context.Context, typ uint32, n, count int, dst [][]byte) ([][]byte, error) {
	if err := p.enter(); err != nil {
		return dst, err
	}
	defer p.leave()
	buf, err := p.reserve(ctx, typ, n)
	if err != nil {
		return dst, err
	}
	dst = append(dst, buf)
	for i := 1; i < count; i++ {
		buf, err := p.reserveLocked(typ, n)
		if err != nil {
			break
		}
		dst = append(dst, buf)
	}
	return dst, nil
}

// Commit publishes the reserved records with one store, releases the topic lock and wakes
// sleeping subscribers (one system call for all of them, none when nobody sleeps).
// ErrNotReserved when nothing is reserved, ErrClosed after Close (what was reserved is then
// discarded).
func (p *Publisher) Commit() error {
	if err := p.enter(); err != nil {
		p.afterClose(nil)
		return err
	}
	defer p.leave()
	if p.held == 0 || p.k == 0 {
		return ErrNotReserved
	}
	p.commit()
	return nil
}

func (p *Publisher) commit() {
	atomic.StoreUint64(p.tail, p.start+p.k) // the publish; orders the payloads before it
	p.stats.add(ctrMessages, p.k)
	p.stats.add(ctrBytes, p.bytes)
	p.abort() // nothing left to discard: releases the lock
	p.notify(p.dataEvent(), 0)
}

// Abort discards the reserved records and releases the topic lock.
func (p *Publisher) Abort() {
	if err := p.enter(); err != nil {
		p.afterClose(nil)
		return
	}
	defer p.leave()
	p.abort()
}

// TryWrite copies b into one record and publishes it, without waiting for room.
func (p *Publisher) TryWrite(typ uint32, b []byte) error { return p.write(nil, typ, b) }

// Write copies b into one record and publishes it, waiting for room under Block.
func (p *Publisher) Write(ctx context.Context, typ uint32, b []byte) error {
	return p.write(ctx, typ, b)
}

func (p *Publisher) write(ctx context.Context, typ uint32, b []byte) error {
	if err := p.enter(); err != nil {
		return err
	}
	defer p.leave() // the copy too: a Close meanwhile must not release the lock under it
	if p.held != 0 {
		return ErrPending
	}
	buf, err := p.reserve(ctx, typ, len(b))
	if err != nil {
		return err
	}
	copy(buf, b)
	p.commit()
	return nil
}

// Ready reports whether a record of n bytes could be reserved now without waiting for
// subscribers (always, except under Block with the slowest live subscriber a ring behind).
func (p *Publisher) Ready(n int) bool {
	if p.policy != Block || n > p.maxMsg || p.enter() != nil {
		return true // the call fails at once (ErrTooLarge, ErrClosed) or never waits
	}
	defer p.leave()
	t := atomic.LoadUint64(p.tail) + p.k
	if p.minPosition(t)+p.slots.slots > t {
		return true
	}
	return p.reapEvery() && p.minPosition(t)+p.slots.slots > t
}

// Arm marks the publisher as waiting for room, for an event loop; see Writer.
func (p *Publisher) Arm(n int) (Wake, bool, error) {
	return p.arm(func() bool {
		t := atomic.LoadUint64(p.tail) + p.k
		return p.policy != Block || n > p.maxMsg || p.minPosition(t)+p.slots.slots > t
	})
}

// Disarm undoes Arm.
func (p *Publisher) Disarm() { p.disarm() }

// Close detaches the publisher: what it reserved is discarded and the lock released.
// Subscribers are not told: a topic has no end of stream.
func (p *Publisher) Close() error { return p.close(p.abort) }

func (p *Publisher) abort() {
	p.unlock()
	p.k, p.bytes = 0, 0
}
