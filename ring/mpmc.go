package ring

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// MPMC slot format: a 16-byte header (sequence uint64, payload length uint32, type uint32)
// and the payload. The sequence word, after Vyukov's bounded MPMC queue, says what the slot
// holds for position p (slot index i = p mod slots), stored relative to the lap base
// b = p - i so that an all-zero segment is a valid empty ring:
//
//	b          free: a writer may claim position p
//	b + 1      published: a reader may claim position p
//	b + slots  released: free for position p + slots
//
// A slot whose length word is skipLength carries no message: a writer died between claiming
// and publishing it (or closed with it reserved), and a repairer published it as a skip.
const (
	slotHeader = 16
	skipLength = ^uint32(0)
)

// mpmcRing is what MPMC writers and readers share.
type mpmcRing struct {
	endpoint
	writePos *uint64 // next position to claim for writing (CAS by writers)
	readPos  *uint64 // next position to claim for reading (CAS by readers)
	claim    *uint64 // this peer's lowest claimed position + 1, 0 when none
	slots    uint64
	slotMask uint64
	slotSize uint64
	maxMsg   int
}

func (m *mpmcRing) attachMPMC(seg *shm.Segment, role shm.Role, opts Options) error {
	if err := m.attach(seg, shm.KindMPMC, role, false, opts); err != nil {
		return err
	}
	d := seg.Descriptor()
	m.slots, m.slotSize = d.SlotCount, uint64(d.SlotSize)
	m.slotMask = m.slots - 1
	m.maxMsg = int(m.slotSize - slotHeader)
	m.writePos, m.readPos = m.u64(offWritePos), m.u64(offReadPos)
	m.claim = layout.Uint64(m.peer.Words(), pwClaim)
	if wp, rp := atomic.LoadUint64(m.writePos), atomic.LoadUint64(m.readPos); wp-rp > m.slots {
		return fmt.Errorf("%w: write position %d, read position %d, %d slots", ErrCorrupt, wp, rp, m.slots)
	}
	return nil
}

// MPMCMaxMessage is the largest payload of an MPMC ring with slots of slotSize bytes.
func MPMCMaxMessage(slotSize uint32) int { return int(slotSize) - slotHeader }

func (m *mpmcRing) slot(pos uint64) []byte {
	off := (pos & m.slotMask) * m.slotSize
	return m.data[off : off+m.slotSize : off+m.slotSize]
}

// base is the lap base of pos: the sequence value that means "free for pos".
func (m *mpmcRing) base(pos uint64) uint64 { return pos - pos&m.slotMask }

func slotSeq(slot []byte) *uint64 { return layout.Uint64(slot, 0) }

// MPMCWriter is one of any number of writers of an MPMC ring, in any number of processes.
// Its methods must be called from one goroutine at a time, except Close, which may be
// called from any goroutine and wakes a blocked call.
type MPMCWriter struct {
	mpmcRing
	pending    []uint64 // positions reserved and not yet published
	pendingLen uint64
}

// NewMPMCWriter attaches a writer to an MPMC segment. It returns ErrKind for another kind of
// segment, ErrCorrupt for impossible positions, and shm's errors.
func NewMPMCWriter(seg *shm.Segment, opts Options) (*MPMCWriter, error) {
	w := &MPMCWriter{pending: make([]uint64, 0, 64)}
	if err := w.attachMPMC(seg, shm.RoleWriter, opts); err != nil {
		if w.peer != nil {
			w.shutdown(w.spaceEvent(), offRetiredWriter, nil)
		}
		return nil, err
	}
	atomic.CompareAndSwapUint32(w.u32(offWriterState), writerNone, writerAttached)
	return w, nil
}

// MaxMessage is the largest payload a slot carries.
func (w *MPMCWriter) MaxMessage() int { return w.maxMsg }

// TryReserve claims the next slot for a record of n payload bytes and returns its payload,
// to be filled in place and published by Commit; several slots may be reserved before one
// Commit. It never blocks: ErrFull, ErrTooLarge, ErrClosed (after this writer's Close or
// CloseRing by any writer).
func (w *MPMCWriter) TryReserve(typ uint32, n int) ([]byte, error) {
	if err := w.enter(); err != nil {
		return nil, err
	}
	defer w.leave()
	return w.tryReserve(typ, n)
}

func (w *MPMCWriter) tryReserve(typ uint32, n int) ([]byte, error) {
	if n < 0 || n > w.maxMsg {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, n, w.maxMsg)
	}
	if atomic.LoadUint32(w.u32(offWriterState)) == writerClosed {
		return nil, ErrClosed
	}
	pos := atomic.LoadUint64(w.writePos)
	for {
		slot := w.slot(pos)
		diff := int64(atomic.LoadUint64(slotSeq(slot)) - w.base(pos))
		switch {
		case diff == 0:
			// The claim is visible before the CAS that takes the slot, so a repairer that
			// sees the write position past pos also sees that a live writer may own it.
			if len(w.pending) == 0 {
				atomic.StoreUint64(w.claim, pos+1)
			}
			if atomic.CompareAndSwapUint64(w.writePos, pos, pos+1) {
				binary.LittleEndian.PutUint32(slot[8:], uint32(n))
				binary.LittleEndian.PutUint32(slot[12:], typ)
				w.pending = append(w.pending, pos)
				w.pendingLen += uint64(n)
				return slot[slotHeader : slotHeader+n : slotHeader+n], nil
			}
			pos = atomic.LoadUint64(w.writePos)
		case diff < 0:
			// The slot still holds the message of the previous lap: the ring is full.
			if len(w.pending) == 0 {
				atomic.StoreUint64(w.claim, 0)
			}
			w.stats.add(ctrFull, 1)
			return nil, ErrFull
		default:
			// Another writer took pos; a correct ring has moved the write position on.
			next := atomic.LoadUint64(w.writePos)
			if next == pos {
				return nil, fmt.Errorf("%w: slot of position %d is ahead of the write position", ErrCorrupt, pos)
			}
			pos = next
		}
	}
}

// Reserve is TryReserve that waits for a free slot until ctx ends. If the ring is full
// while slots are reserved, it commits them first. It returns ErrPeerDead when no live
// reader is attached to make room.
func (w *MPMCWriter) Reserve(ctx context.Context, typ uint32, n int) ([]byte, error) {
	if err := w.enter(); err != nil {
		return nil, err
	}
	defer w.leave()
	for {
		p, err := w.tryReserve(typ, n)
		if err != ErrFull {
			return p, err
		}
		if len(w.pending) > 0 {
			w.commit()
		}
		if err := w.awaitRoom(ctx); err != nil {
			return nil, err
		}
	}
}

// hasRoom reports whether the slot at the write position is free for it.
func (w *MPMCWriter) hasRoom() bool {
	pos := atomic.LoadUint64(w.writePos)
	return int64(atomic.LoadUint64(slotSeq(w.slot(pos)))-w.base(pos)) >= 0
}

func (w *MPMCWriter) awaitRoom(ctx context.Context) error {
	check := func(expensive bool) error {
		if atomic.LoadUint32(w.u32(offWriterState)) == writerClosed {
			return ErrClosed
		}
		if !expensive {
			return nil
		}
		if n, err := livePeers(w.seg, shm.RoleReader); err != nil || n > 0 || w.hasRoom() {
			return err
		}
		return ErrPeerDead
	}
	return w.wait.await(ctx, w.spaceEvent(), w.hasRoom, check)
}

// Commit publishes every slot reserved since the last Commit and wakes as many sleeping
// readers. It returns ErrNotReserved if nothing is reserved.
func (w *MPMCWriter) Commit() error {
	if err := w.enter(); err != nil {
		return err
	}
	defer w.leave()
	if len(w.pending) == 0 {
		return ErrNotReserved
	}
	w.commit()
	return nil
}

func (w *MPMCWriter) commit() {
	for _, pos := range w.pending {
		// Release store: the payload written before it is visible to the reader whose
		// load of the sequence (acquire) sees the slot published.
		atomic.StoreUint64(slotSeq(w.slot(pos)), w.base(pos)+1)
	}
	atomic.StoreUint64(w.claim, 0)
	w.stats.add(ctrMessages, uint64(len(w.pending)))
	w.stats.add(ctrBytes, w.pendingLen)
	n := len(w.pending)
	w.pending, w.pendingLen = w.pending[:0], 0
	w.notify(w.dataEvent(), n)
}

// Abort discards every slot reserved since the last Commit: the slots are published as
// skips, which readers pass over.
func (w *MPMCWriter) Abort() {
	if w.enter() != nil {
		return
	}
	defer w.leave()
	w.skipPending()
}

// TryWrite copies p into one slot of type typ and publishes it. It never blocks.
func (w *MPMCWriter) TryWrite(typ uint32, p []byte) error {
	if err := w.enter(); err != nil {
		return err
	}
	defer w.leave()
	if len(w.pending) > 0 {
		return ErrPending
	}
	buf, err := w.tryReserve(typ, len(p))
	if err != nil {
		return err
	}
	copy(buf, p)
	w.commit()
	return nil
}

// Write is TryWrite that waits for a free slot until ctx ends.
func (w *MPMCWriter) Write(ctx context.Context, typ uint32, p []byte) error {
	if err := w.enter(); err != nil {
		return err
	}
	defer w.leave()
	if len(w.pending) > 0 {
		return ErrPending
	}
	for {
		buf, err := w.tryReserve(typ, len(p))
		if err == nil {
			copy(buf, p)
			w.commit()
			return nil
		}
		if err != ErrFull {
			return err
		}
		if err := w.awaitRoom(ctx); err != nil {
			return err
		}
	}
}

// Close detaches this writer. Slots it reserved and did not commit are published as skips,
// so readers never wait for them. Other writers go on; to end the stream for readers, use
// CloseRing. Close wakes a blocked call of this writer. It is idempotent.
func (w *MPMCWriter) Close() error {
	return w.shutdown(w.spaceEvent(), offRetiredWriter, w.skipPending)
}

// CloseRing ends the stream for everyone: writers get ErrClosed, readers drain what was
// committed and then get ErrClosed. Then it closes this writer.
func (w *MPMCWriter) CloseRing() error {
	atomic.StoreUint32(w.u32(offWriterState), writerClosed)
	w.dataEvent().wakeAll()
	w.spaceEvent().wakeAll()
	return w.Close()
}

func (w *MPMCWriter) skipPending() {
	for _, pos := range w.pending {
		slot := w.slot(pos)
		binary.LittleEndian.PutUint32(slot[8:], skipLength)
		atomic.StoreUint64(slotSeq(slot), w.base(pos)+1)
	}
	if len(w.pending) > 0 {
		w.stats.add(ctrDrops, uint64(len(w.pending)))
		w.notify(w.dataEvent(), len(w.pending))
	}
	w.pending = w.pending[:0]
	atomic.StoreUint64(w.claim, 0)
}

// MPMCReader is one of any number of readers of an MPMC ring, in any number of processes.
// Each message goes to exactly one reader. A reader borrows one record at a time: Next
// releases the previous record if it was not released. If a reader's process dies with a
// record borrowed, another reader delivers that record again (at-least-once).
//
// Its methods must be called from one goroutine at a time, except Close, which may be
// called from any goroutine and wakes a blocked call.
type MPMCReader struct {
	mpmcRing
	borrowed    bool
	borrowedPos uint64
	borrowedLen uint64
	borrowedMsg bool   // the borrowed slot holds a message, not a skip
	adopted     uint64 // a dead reader's claimed position + 1, to deliver next; 0 when none
	pinned      bool
}

// NewMPMCReader attaches a reader to an MPMC segment. Errors as NewMPMCWriter.
func NewMPMCReader(seg *shm.Segment, opts Options) (*MPMCReader, error) {
	r := &MPMCReader{}
	if err := r.attachMPMC(seg, shm.RoleReader, opts); err != nil {
		if r.peer != nil {
			r.shutdown(r.dataEvent(), offRetiredReader, nil)
		}
		return nil, err
	}
	return r, nil
}

// available reports whether the slot at the read position is published (or a dead
// reader's record waits to be delivered again).
func (r *MPMCReader) available() bool {
	if r.adopted != 0 {
		return true
	}
	pos := atomic.LoadUint64(r.readPos)
	return int64(atomic.LoadUint64(slotSeq(r.slot(pos)))-(r.base(pos)+1)) >= 0
}

func (r *MPMCReader) tryNext() (Record, error) {
	r.release() // one record borrowed at a time
	if r.adopted != 0 {
		pos := r.adopted - 1
		r.adopted = 0
		if rec, err := r.borrow(pos); err != errSkip {
			return rec, err
		}
	}
	pos := atomic.LoadUint64(r.readPos)
	for {
		slot := r.slot(pos)
		diff := int64(atomic.LoadUint64(slotSeq(slot)) - (r.base(pos) + 1))
		switch {
		case diff == 0:
			atomic.StoreUint64(r.claim, pos+1) // visible before the CAS, like a writer's claim
			if atomic.CompareAndSwapUint64(r.readPos, pos, pos+1) {
				rec, err := r.borrow(pos)
				if err == errSkip {
					pos = atomic.LoadUint64(r.readPos)
					continue
				}
				return rec, err
			}
			atomic.StoreUint64(r.claim, 0)
			pos = atomic.LoadUint64(r.readPos)
		case diff < 0:
			if r.drainedAndClosed() {
				return Record{}, ErrClosed
			}
			if r.adopted != 0 {
				pos := r.adopted - 1
				r.adopted = 0
				if rec, err := r.borrow(pos); err != errSkip {
					return rec, err
				}
			}
			r.stats.add(ctrEmpty, 1)
			return Record{}, ErrEmpty
		default:
			next := atomic.LoadUint64(r.readPos)
			if next == pos {
				return Record{}, fmt.Errorf("%w: slot of position %d is ahead of the read position", ErrCorrupt, pos)
			}
			pos = next
		}
	}
}

// errSkip is borrow's internal signal that the slot was a skip and has been released.
var errSkip = fmt.Errorf("skip slot")

// borrow turns the claimed slot at pos into a Record. Its length is read once and checked.
func (r *MPMCReader) borrow(pos uint64) (Record, error) {
	slot := r.slot(pos)
	length := binary.LittleEndian.Uint32(slot[8:])
	typ := binary.LittleEndian.Uint32(slot[12:])
	r.borrowed, r.borrowedPos, r.borrowedLen, r.borrowedMsg = true, pos, 0, length != skipLength
	if length == skipLength {
		r.release()
		return Record{}, errSkip
	}
	if int64(length) > int64(r.maxMsg) {
		r.borrowedMsg = false
		r.stats.add(ctrDrops, 1)
		r.release() // give the slot back so the ring is not wedged by it
		return Record{}, fmt.Errorf("%w: slot at position %d says %d bytes, at most %d", ErrCorrupt, pos, length, r.maxMsg)
	}
	if !r.pinned {
		if err := r.seg.Pin(); err != nil {
			r.release()
			return Record{}, err
		}
		r.pinned = true
	}
	r.borrowedLen = uint64(length)
	return Record{Type: typ, Data: slot[slotHeader : slotHeader+int(length) : slotHeader+int(length)]}, nil
}

func (r *MPMCReader) awaitData(ctx context.Context) error {
	check := func(expensive bool) error {
		if r.drainedAndClosed() {
			return ErrClosed
		}
		if !expensive {
			return nil
		}
		r.repair()
		if r.available() {
			return nil
		}
		if atomic.LoadUint32(r.u32(offWriterState)) != writerAttached || atomic.LoadUint64(r.writePos) != atomic.LoadUint64(r.readPos) {
			return nil
		}
		if n, err := livePeers(r.seg, shm.RoleWriter); err != nil || n > 0 {
			return err
		}
		return ErrPeerDead
	}
	return r.wait.await(ctx, r.dataEvent(), r.available, check)
}

// drainedAndClosed reports whether the ring was closed and every message claimed, after
// adopting any record a dead reader left borrowed (which is then not drained). The repair
// scan runs only once the ring looks closed and empty, so it costs nothing before.
func (r *MPMCReader) drainedAndClosed() bool {
	if r.adopted != 0 || atomic.LoadUint32(r.u32(offWriterState)) != writerClosed ||
		atomic.LoadUint64(r.writePos) != atomic.LoadUint64(r.readPos) {
		return false
	}
	r.repair()
	return r.adopted == 0
}

// repair looks at what dead peers left behind (slow path only: it lists the peer table).
func (r *MPMCReader) repair() {
	peers, err := r.seg.Peers()
	if err != nil {
		return
	}
	hdr := r.hdr
	claimOf := func(i int) *uint64 { return layout.Uint64(hdr, layout.PeerOffset(i)+layout.PeerOffClaim) }

	// A dead reader's borrowed record: adopt it. Our claim is stored before the dead one
	// is cleared, so the record is always claimed by someone; the CAS decides which
	// repairer adopts it.
	for _, p := range peers {
		if p.Alive || p.Role != shm.RoleReader || r.adopted != 0 {
			continue
		}
		c := atomic.LoadUint64(claimOf(p.Index))
		if c == 0 {
			continue
		}
		pos := c - 1
		published := atomic.LoadUint64(slotSeq(r.slot(pos))) == r.base(pos)+1
		atomic.StoreUint64(r.claim, c)
		if atomic.CompareAndSwapUint64(claimOf(p.Index), c, 0) && published && atomic.LoadUint64(r.readPos)-pos-1 < r.slots {
			r.adopted = c
		} else {
			atomic.StoreUint64(r.claim, 0)
		}
	}

	// A slot at the read position claimed by a writer and never published: if no live
	// writer can own it, publish it as a skip. A live claimer is never overtaken.
	pos := atomic.LoadUint64(r.readPos)
	wp := atomic.LoadUint64(r.writePos)
	if wp == pos || wp-pos > r.slots {
		return
	}
	slot := r.slot(pos)
	if atomic.LoadUint64(slotSeq(slot)) != r.base(pos) {
		return
	}
	for _, p := range peers {
		if p.Role != shm.RoleWriter {
			continue
		}
		c := atomic.LoadUint64(claimOf(p.Index))
		if !p.Alive {
			if c != 0 {
				atomic.CompareAndSwapUint64(claimOf(p.Index), c, 0) // only repair reads it; frees the entry
			}
			continue
		}
		if c != 0 && int64(pos-(c-1)) >= 0 {
			return // a live writer's pending slots start at or before pos
		}
	}
	// The live-writer check ran after the write position was seen past pos, and a writer
	// stores its claim before its CAS, so no live writer holds pos.
	binary.LittleEndian.PutUint32(slot[8:], skipLength)
	if atomic.CompareAndSwapUint64(slotSeq(slot), r.base(pos), r.base(pos)+1) {
		r.stats.add(ctrDrops, 1)
	}
}

// Release gives the borrowed record's slot back to the writers and wakes one that waits
// for room. Release with nothing borrowed does nothing.
func (r *MPMCReader) Release() {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.release()
}

func (r *MPMCReader) release() {
	if r.pinned {
		r.seg.Unpin()
		r.pinned = false
	}
	if !r.borrowed || r.closed.Load() {
		return
	}
	pos := r.borrowedPos
	r.borrowed = false
	// Release store: our reads of the slot happen before a writer that sees it free
	// (acquire) overwrites it.
	atomic.StoreUint64(slotSeq(r.slot(pos)), r.base(pos)+r.slots)
	atomic.StoreUint64(r.claim, 0)
	if r.borrowedMsg { // decided from the one read of the length in borrow
		r.stats.add(ctrMessages, 1)
		r.stats.add(ctrBytes, r.borrowedLen)
	}
	r.notify(r.spaceEvent(), 1)
}

// unborrow keeps the borrowed record for the next call instead of releasing it.
func (r *MPMCReader) unborrow(int) {
	r.adopted = r.borrowedPos + 1
	r.borrowed = false
	if r.pinned {
		r.seg.Unpin()
		r.pinned = false
	}
}

// Close detaches the reader. A record still borrowed is not released: its claim stays in
// the peer table and another reader delivers it again. The segment stays pinned until it is
// released with Release. Close wakes a blocked call of this reader. It is idempotent.
func (r *MPMCReader) Close() error {
	return r.shutdown(r.dataEvent(), offRetiredReader, func() {
		if r.adopted != 0 {
			atomic.StoreUint64(r.claim, r.adopted) // hand the adopted record on
		}
	})
}

// livePeers counts the live peers of seg with role.
func livePeers(seg *shm.Segment, role shm.Role) (int, error) {
	peers, err := seg.Peers()
	n := 0
	for _, p := range peers {
		if p.Alive && p.Role == role {
			n++
		}
	}
	return n, err
}

// TryNext borrows the next record in place until Release; it releases a record still
// borrowed first. It never blocks: ErrEmpty, ErrClosed (CloseRing and drained, or after
// this reader's Close), ErrCorrupt.
func (r *MPMCReader) TryNext() (Record, error) { return next(r, nil) }

// Next is TryNext that waits until a record is published or ctx ends. While it waits it
// repairs what dead peers left: a slot a dead writer claimed and never published is skipped,
// a record a dead reader borrowed is delivered again. With no live writer and nothing left,
// it returns ErrPeerDead.
func (r *MPMCReader) Next(ctx context.Context) (Record, error) { return next(r, ctx) }

// TryRead copies the next record into dst and releases it. It returns ErrShortBuffer,
// releasing nothing, when dst is too small: the record is then delivered by the next call.
func (r *MPMCReader) TryRead(dst []byte) (int, uint32, error) { return read(r, nil, dst) }

// Read is TryRead that waits like Next.
func (r *MPMCReader) Read(ctx context.Context, dst []byte) (int, uint32, error) {
	return read(r, ctx, dst)
}

// Drain waits like Next until a record is available, then hands fn every available record,
// up to max (all if max <= 0), releasing each slot after fn returns. If fn returns an error,
// Drain stops and the record fn failed on is delivered again by the next call. It returns
// how many records fn accepted.
func (r *MPMCReader) Drain(ctx context.Context, fn func(Record) error, max int) (int, error) {
	return drain(r, ctx, fn, max)
}
