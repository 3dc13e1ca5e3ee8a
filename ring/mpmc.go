package ring

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/internal/fence"
	"github.com/shmq/shmq/shm"
)

// mpmcRing is what MPMC writers and readers share.
type mpmcRing struct {
	endpoint
	mpmcSlots
	writePos *uint64 // next position to claim for writing (CAS by writers)
	readPos  *uint64 // next position to claim for reading (CAS by readers)
	cell     cell    // this endpoint's claim cell
	hasCell  bool
	maxMsg   int
}

func (m *mpmcRing) attachMPMC(seg *shm.Segment, sd side, opts Options, closer func() error) error {
	if err := m.attach(seg, MPMC, sd, 0, opts, closer); err != nil {
		return err
	}
	m.mpmcSlots = mpmcSlots{mem: m.endpoint.data, slots: m.geo.slots, slotSize: m.geo.slotSize}
	m.maxMsg = int(m.slotSize - slotHeader)
	m.writePos, m.readPos = m.u64(offWritePos), m.u64(offReadPos)
	err := m.guarded(func() error {
		if wp, rp, bad := m.impossiblePositions(); bad {
			return fmt.Errorf("%w: write position %d, read position %d, %d slots", ErrCorrupt, wp, rp, m.slots)
		}
		role := uint32(cellWriter)
		if sd == readerSide {
			role = cellReader
		}
		c, err := m.takeCell(role)
		if err == nil {
			m.cell, m.hasCell = c, true
		}
		return err
	})
	var open func()
	if sd == writerSide {
		open = m.openStream
	}
	return m.finishAttach(err, open)
}

// impossiblePositions reports whether the positions are a pair no correct ring has: the
// read position past the write position, or the write position more than the ring ahead of
// it. Live endpoints move both while they are loaded (a check of one load each, with the
// loader preempted in between, found a read position past a write position loaded an
// instant before), so the read position is loaded before and after the write position, and
// only a write position that no read position in between explains is impossible.
func (m *mpmcRing) impossiblePositions() (wp, rp uint64, bad bool) {
	rp = atomic.LoadUint64(m.readPos)
	wp = atomic.LoadUint64(m.writePos)
	moved := atomic.LoadUint64(m.readPos) - rp
	return wp, rp, wp-rp > moved+m.slots
}

// closeMPMC is Close's part for both MPMC endpoints: finish, then give the cell back.
func (m *mpmcRing) closeMPMC(finish func()) error {
	return m.close(func() {
		if finish != nil {
			finish()
		}
		if m.hasCell {
			m.hasCell = false
			m.dropCell(m.cell)
		}
	})
}

// MPMCWriter is one of any number of writers of an MPMC ring, in any number of processes.
// Its methods must be called from one goroutine at a time, except Close, which may be
// called from any goroutine, any number of times, and wakes a blocked call.
type MPMCWriter struct {
	mpmcRing
	pending    []uint64 // positions reserved and not yet published
	pendingLen uint64
}

// NewMPMCWriter attaches a writer to an MPMC segment and opens the stream (a new stream if
// the last one ended). It returns ErrKind for another kind of segment, ErrVersion for
// another ring format, ErrCorrupt for impossible positions, an error wrapping
// shm.ErrPeerTableFull when all the ring's claim cells (one per MPMC endpoint) are taken,
// and shm's errors.
func NewMPMCWriter(seg *shm.Segment, opts Options) (*MPMCWriter, error) {
	w := &MPMCWriter{pending: make([]uint64, 0, 64)}
	w.holds = func() bool { return len(w.pending) > 0 }
	if err := w.attachMPMC(seg, writerSide, opts, w.Close); err != nil {
		return nil, err
	}
	return w, nil
}

// MaxMessage is the largest payload a slot carries.
func (w *MPMCWriter) MaxMessage() int { return w.maxMsg }

// TryReserve claims the next slot for a record of n payload bytes and returns its payload,
// to be filled in place and published by Commit; several slots may be reserved before one
// Commit. It never blocks: ErrFull, ErrTooLarge, ErrClosed.
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
	pos := atomic.LoadUint64(w.writePos)
	for {
		slot := w.slot(pos)
		diff := int64(atomic.LoadUint64(slotSeq(slot)) - w.base(pos))
		switch {
		case diff == 0:
			// The claim is visible before the CAS that takes the slot, so a repairer that
			// sees the write position past pos also sees that a live writer may own it.
			if len(w.pending) == 0 {
				atomic.StoreUint64(w.cell.claim, pos+1)
			}
			if atomic.CompareAndSwapUint64(w.writePos, pos, pos+1) {
				putSlotHeader(slot, typ, n)
				w.pending = append(w.pending, pos)
				w.pendingLen += uint64(n)
				return slot[slotHeader : slotHeader+n : slotHeader+n], nil
			}
			pos = atomic.LoadUint64(w.writePos)
		case diff < 0:
			// The slot still holds the message of the previous lap: the ring is full.
			if len(w.pending) == 0 {
				atomic.StoreUint64(w.cell.claim, 0)
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
// while slots are reserved, it commits them first. A writer with no reader attached (yet,
// or since they closed) waits. It returns ErrPeerDead when every reader that attached died
// and none is attached now, ctx's error when ctx ends, ErrClosed when the writer is closed
// meanwhile.
func (w *MPMCWriter) Reserve(ctx context.Context, typ uint32, n int) ([]byte, error) {
	if err := w.enter(); err != nil {
		return nil, err
	}
	defer w.leave()
	p, err := w.tryReserve(typ, n)
	if err != ErrFull {
		return p, err
	}
	return w.reserveSlow(ctx, typ, n)
}

// reserveSlow is Reserve once the ring was found full: it commits what is reserved, waits
// and reserves, under SetPanicOnFault (see fault.go).
func (w *MPMCWriter) reserveSlow(ctx context.Context, typ uint32, n int) (p []byte, err error) {
	defer w.catch(debug.SetPanicOnFault(true), &err)
	for {
		if len(w.pending) > 0 {
			w.commit()
		}
		if err := w.awaitRoom(ctx); err != nil {
			return nil, err
		}
		p, err := w.tryReserve(typ, n)
		if err != ErrFull {
			return p, err
		}
	}
}

// ReserveBatch reserves up to count slots for records of n payload bytes each, of type typ,
// with one CAS on the write position, appends their payloads to dst, and returns it; one
// Commit publishes them. It reserves as many consecutive free slots as there are now, at
// least one: with none free it commits what is reserved and waits like Reserve. Errors as
// Reserve.
func (w *MPMCWriter) ReserveBatch(ctx context.Context, typ uint32, n, count int, dst [][]byte) ([][]byte, error) {
	if err := w.enter(); err != nil {
		return dst, err
	}
	defer w.leave()
	got, err := w.tryReserveBatch(typ, n, count, &dst)
	if err != ErrFull || got > 0 || count <= 0 {
		if err == ErrFull {
			err = nil
		}
		return dst, err
	}
	return w.reserveBatchSlow(ctx, typ, n, count, dst)
}

// reserveBatchSlow is ReserveBatch once the ring was found full: it commits what is
// reserved, waits and reserves, under SetPanicOnFault (see fault.go).
func (w *MPMCWriter) reserveBatchSlow(ctx context.Context, typ uint32, n, count int, dst [][]byte) (_ [][]byte, err error) {
	defer w.catch(debug.SetPanicOnFault(true), &err)
	for {
		if len(w.pending) > 0 {
			w.commit()
		}
		if err := w.awaitRoom(ctx); err != nil {
			return dst, err
		}
		got, err := w.tryReserveBatch(typ, n, count, &dst)
		if err != ErrFull || got > 0 {
			if err == ErrFull {
				err = nil
			}
			return dst, err
		}
	}
}

// tryReserveBatch claims up to count consecutive free slots from the write position with one
// CAS. It returns how many, and ErrFull when none is free.
func (w *MPMCWriter) tryReserveBatch(typ uint32, n, count int, dst *[][]byte) (int, error) {
	if n < 0 || n > w.maxMsg {
		return 0, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, n, w.maxMsg)
	}
	if count <= 0 {
		return 0, nil
	}
	pos := atomic.LoadUint64(w.writePos)
	for {
		first := int64(atomic.LoadUint64(slotSeq(w.slot(pos))) - w.base(pos))
		k := uint64(0)
		if first == 0 {
			for k = 1; k < uint64(count) && k < w.slots && atomic.LoadUint64(slotSeq(w.slot(pos+k))) == w.base(pos+k); k++ {
				// free for pos+k; only a writer's CAS on the write position takes it
			}
		}
		if k == 0 {
			if first < 0 { // the previous lap's message is still there: full
				if len(w.pending) == 0 {
					atomic.StoreUint64(w.cell.claim, 0)
				}
				w.stats.add(ctrFull, 1)
				return 0, ErrFull
			}
			next := atomic.LoadUint64(w.writePos)
			if next == pos {
				return 0, fmt.Errorf("%w: slot of position %d is ahead of the write position", ErrCorrupt, pos)
			}
			pos = next
			continue
		}
		if len(w.pending) == 0 {
			atomic.StoreUint64(w.cell.claim, pos+1) // before the CAS, as in tryReserve
		}
		if atomic.CompareAndSwapUint64(w.writePos, pos, pos+k) {
			for i := range k {
				slot := w.slot(pos + i)
				putSlotHeader(slot, typ, n)
				w.pending = append(w.pending, pos+i)
				*dst = append(*dst, slot[slotHeader:slotHeader+n:slotHeader+n])
			}
			w.pendingLen += k * uint64(n)
			return int(k), nil
		}
		pos = atomic.LoadUint64(w.writePos)
	}
}

// hasRoom reports whether the slot at the write position is free for it.
func (w *MPMCWriter) hasRoom() bool {
	pos := atomic.LoadUint64(w.writePos)
	return int64(atomic.LoadUint64(slotSeq(w.slot(pos)))-w.base(pos)) >= 0
}

func (w *MPMCWriter) awaitRoom(ctx context.Context) error {
	check := func(expensive bool) error {
		if !expensive {
			return nil
		}
		dead, err := w.otherSideDead()
		if err != nil || !dead || w.hasRoom() {
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
		w.afterClose(w.forgetPending)
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
		// load of the sequence (acquire) sees the slot published. A plain release store,
		// not an exchange: an exchange per slot waits, slot after slot, for the line to come
		// back from the reader's core. The exchange that clears the claim below orders every
		// one of them before notify's load of the sleepers, as the eventcount needs, and after
		// them, so that a repairer that sees the claim cleared sees the slots published.
		fence.StoreRelease64(slotSeq(w.slot(pos)), w.base(pos)+1)
	}
	atomic.StoreUint64(w.cell.claim, 0)
	w.stats.add2(ctrMessages, uint64(len(w.pending)), ctrBytes, w.pendingLen)
	n := len(w.pending)
	w.pending, w.pendingLen = w.pending[:0], 0
	if atomic.LoadUint64(w.events[evData].waiters) != 0 { // notify's first test, inline
		w.notify(w.dataEvent(), n)
	}
}

// Abort discards every slot reserved since the last Commit: the slots are published as
// skips, which readers pass over.
func (w *MPMCWriter) Abort() {
	if w.enter() != nil {
		w.afterClose(w.forgetPending)
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

// Write is TryWrite that waits for a free slot until ctx ends (see Reserve).
func (w *MPMCWriter) Write(ctx context.Context, typ uint32, p []byte) error {
	if err := w.enter(); err != nil {
		return err
	}
	defer w.leave()
	if len(w.pending) > 0 {
		return ErrPending
	}
	if err := w.writeOnce(typ, p); err != ErrFull {
		return err
	}
	return w.writeSlow(ctx, typ, p)
}

// writeOnce copies p into one record of type typ and publishes it, if it fits now: ErrFull
// if not.
func (w *MPMCWriter) writeOnce(typ uint32, p []byte) error {
	buf, err := w.tryReserve(typ, len(p))
	if err != nil {
		return err
	}
	copy(buf, p)
	w.commit()
	return nil
}

// writeSlow is Write once the ring was found full: it waits and writes, under
// SetPanicOnFault (see fault.go).
func (w *MPMCWriter) writeSlow(ctx context.Context, typ uint32, p []byte) (err error) {
	defer w.catch(debug.SetPanicOnFault(true), &err)
	for {
		if err := w.awaitRoom(ctx); err != nil {
			return err
		}
		if err := w.writeOnce(typ, p); err != ErrFull {
			return err
		}
	}
}

// Ready reports, without blocking or a system call, whether a slot is free now (or the
// writer is closed, so that a call returns at once). n is checked only against MaxMessage.
func (w *MPMCWriter) Ready(n int) bool {
	if w.enter() != nil {
		return true
	}
	defer w.leave()
	return n > w.maxMsg || w.hasRoom()
}

// Arm prepares an event loop to sleep until a slot is free (see SPSCWriter.Arm).
func (w *MPMCWriter) Arm(n int) (Wake, bool, error) {
	return w.arm(func() bool { return n > w.maxMsg || w.hasRoom() })
}

// Disarm undoes Arm. It is idempotent.
func (w *MPMCWriter) Disarm() { w.disarm() }

// Close detaches this writer. Slots it reserved and did not commit are published as skips,
// so readers never wait for them. If no other live writer is attached, the stream ends:
// readers drain what was committed and then get ErrEndOfStream, until a writer attaches
// again. Close wakes a blocked call of this writer. It is safe from any goroutine, any
// number of times.
func (w *MPMCWriter) Close() error { return w.closeMPMC(w.skipPending) }

// forgetPending drops the Go-side record of what was reserved (a broken or closed writer:
// nothing is published or skipped).
func (w *MPMCWriter) forgetPending() { w.pending, w.pendingLen = w.pending[:0], 0 }

func (w *MPMCWriter) skipPending() {
	for _, pos := range w.pending {
		slot := w.slot(pos)
		putSlotSkip(slot)
		atomic.StoreUint64(slotSeq(slot), w.base(pos)+1)
	}
	if len(w.pending) > 0 {
		w.stats.add(ctrDrops, uint64(len(w.pending)))
		w.notify(w.dataEvent(), len(w.pending))
	}
	w.pending = w.pending[:0]
	if w.hasCell {
		atomic.StoreUint64(w.cell.claim, 0)
	}
}

// MPMCReader is one of any number of readers of an MPMC ring, in any number of processes.
// Each message goes to exactly one reader. A reader borrows one record at a time: Next
// releases the previous record if it was not released. If a reader's process dies with a
// record borrowed (or it closes with one), another reader delivers that record again
// (at-least-once).
//
// Its methods must be called from one goroutine at a time, except Close, which may be
// called from any goroutine, any number of times, and wakes a blocked call.
type MPMCReader struct {
	mpmcRing
	borrowed    bool
	borrowedPos uint64
	borrowedLen uint64
	borrowedMsg bool   // the borrowed slot holds a message, not a skip
	rejected    bool   // the borrowed record was rejected
	adopted     uint64 // a dead reader's claimed position + 1, to deliver next; 0 when none
	pending     uint64 // a dead reader's claim taken over and not yet resolved; 0 when none
	stall       stallWatch
}

// NewMPMCReader attaches a reader to an MPMC segment. Errors as NewMPMCWriter.
func NewMPMCReader(seg *shm.Segment, opts Options) (*MPMCReader, error) {
	r := &MPMCReader{}
	r.holds = func() bool { return r.borrowed }
	if err := r.attachMPMC(seg, readerSide, opts, r.Close); err != nil {
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
	if r.pending != 0 {
		return false // nothing until the pending claim is resolved, on a repair round
	}
	pos := atomic.LoadUint64(r.readPos)
	return int64(atomic.LoadUint64(slotSeq(r.slot(pos)))-(r.base(pos)+1)) >= 0
}

func (r *MPMCReader) tryNext() (Record, error) {
	r.release() // one record borrowed at a time
	if r.pending != 0 {
		if r.resolvePending(); r.pending != 0 {
			return Record{}, ErrEmpty // our cell holds the pending claim: claim nothing else
		}
	}
	if rec, ok, err := r.takeAdopted(); ok {
		return rec, err
	}
	pos := atomic.LoadUint64(r.readPos)
	for {
		slot := r.slot(pos)
		diff := int64(atomic.LoadUint64(slotSeq(slot)) - (r.base(pos) + 1))
		switch {
		case diff == 0:
			atomic.StoreUint64(r.cell.claim, pos+1) // visible before the CAS, like a writer's claim
			if atomic.CompareAndSwapUint64(r.readPos, pos, pos+1) {
				rec, err := r.borrow(pos)
				if err == errSkip {
					pos = atomic.LoadUint64(r.readPos)
					continue
				}
				return rec, err
			}
			atomic.StoreUint64(r.cell.claim, 0)
			pos = atomic.LoadUint64(r.readPos)
		case diff < 0:
			if r.drainedAndEnded() {
				return Record{}, ErrEndOfStream
			}
			if rec, ok, err := r.takeAdopted(); ok {
				return rec, err
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

// takeAdopted borrows a record adopted from a dead reader, if there is one.
func (r *MPMCReader) takeAdopted() (Record, bool, error) {
	if r.adopted == 0 {
		return Record{}, false, nil
	}
	pos := r.adopted - 1
	r.adopted = 0
	rec, err := r.borrow(pos)
	if err == errSkip {
		return Record{}, false, nil
	}
	return rec, true, err
}

// errSkip is borrow's internal signal that the slot was a skip and has been released.
var errSkip = fmt.Errorf("skip slot")

// borrow turns the claimed slot at pos into a Record. Its header is parsed once.
func (r *MPMCReader) borrow(pos uint64) (Record, error) {
	slot := r.slot(pos)
	rec, err := parseSlot(slot, pos)
	r.borrowed, r.borrowedPos, r.borrowedLen, r.borrowedMsg, r.rejected = true, pos, 0, false, false
	if err != nil {
		r.stats.add(ctrDrops, 1)
		r.release() // give the slot back so the ring is not wedged by it
		return Record{}, err
	}
	if rec.skip {
		r.release()
		return Record{}, errSkip
	}
	r.borrowedMsg, r.borrowedLen = true, uint64(rec.n)
	end := slotHeader + int(rec.n)
	return Record{Type: rec.typ, Data: slot[slotHeader:end:end]}, nil
}

func (r *MPMCReader) awaitData(ctx context.Context) error {
	r.stall.waitStart = time.Now()
	return r.wait.await(ctx, r.dataEvent(), r.ready, r.checkPeers)
}

// checkPeers is awaitData's check (see waiter.await) and, expensive, Maintain's.
func (r *MPMCReader) checkPeers(expensive bool) error {
	if r.drainedAndEnded() {
		return ErrEndOfStream
	}
	if !expensive {
		r.checkStall()
		return nil
	}
	r.repair()
	if r.available() || atomic.LoadUint64(r.writePos) != atomic.LoadUint64(r.readPos) {
		return nil
	}
	dead, err := r.otherSideDead()
	if err != nil || !dead {
		return err
	}
	return ErrPeerDead
}

// Maintain runs the liveness check and the repair a blocked Next makes: see Reader.
func (r *MPMCReader) Maintain() error { return maintain(r.ep(), r.checkPeers) }

// drainedAndEnded reports whether the stream ended and every message was claimed, after
// adopting any record a dead reader left borrowed (which is then not drained). The repair
// scan runs only once the ring looks ended and empty, so it costs nothing before.
func (r *MPMCReader) drainedAndEnded() bool {
	if r.adopted != 0 || r.pending != 0 || !r.streamEnded() || atomic.LoadUint64(r.writePos) != atomic.LoadUint64(r.readPos) {
		return false
	}
	r.repair()
	return r.adopted == 0 && r.pending == 0
}

// ready reports whether a call would not find the ring empty: a record, or the end.
func (r *MPMCReader) ready() bool {
	return r.available() || (r.streamEnded() && atomic.LoadUint64(r.writePos) == atomic.LoadUint64(r.readPos))
}

// repair looks at what dead (or closed) endpoints left in the claim cells: a reader's
// borrowed record is adopted, to be delivered again; a slot a writer claimed and never
// published is turned into a skip once no live writer can own it. Slow path only.
func (r *MPMCReader) repair() {
	var liveWriterClaims []uint64
	if r.pending != 0 {
		r.resolvePending()
	}
	dead := r.scanCells(cellWriter, func(c uint64, _ uint32) { liveWriterClaims = append(liveWriterClaims, c) }, nil)
	if len(dead) > 0 {
		atRepairPoint(repairDeadScanned)
	}
	for _, d := range dead {
		switch {
		case d.claim == 0:
			// Nothing to repair: freeDeadCells frees it.
		case d.flags&cellFlagSkip != 0:
			r.takeOverSkip(d)
		case d.role == cellWriter:
			// Only repair reads a writer's claim; the skip below handles its slot.
			if r.takeOver(&d) {
				freeTaken(d)
			}
		case r.adopted != 0 || r.pending != 0:
			// Our cell's claim is in use: a later round takes this one.
		case r.readerClaimed(d.claim, true):
			// Another repairer is at it, or a live reader holds the record.
		default:
			r.adoptClaim(d)
		}
	}
	r.freeDeadCells(dead)

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
	// Rescan live writers now that the write position was seen past pos: a writer stores
	// its claim before its CAS, so any live writer that holds pos shows it here.
	liveWriterClaims = liveWriterClaims[:0]
	r.scanCells(cellWriter, func(c uint64, _ uint32) { liveWriterClaims = append(liveWriterClaims, c) }, nil)
	for _, c := range liveWriterClaims {
		if int64(pos-(c-1)) >= 0 {
			return // a live writer's pending slots start at or before pos
		}
	}
	if r.adopted != 0 || r.pending != 0 {
		return // our cell's claim is in use: another reader, or a later round, does it
	}
	atRepairPoint(repairSkipDecided)
	// Lock the slot (sequence base-1: not yet published for readers of pos, full for
	// writers of pos, and old for anyone at an earlier lap) before writing the skip marker,
	// so that the marker can never land in a slot that moved on to a later lap. Our claim
	// says who holds the lock, so that if we die holding it another reader finishes.
	r.cell.setFlags(cellFlagSkip) // before the claim it goes with
	atomic.StoreUint64(r.cell.claim, pos+1)
	if atomic.CompareAndSwapUint64(slotSeq(slot), r.base(pos), r.base(pos)-1) {
		r.finishSkip(slot, pos)
	}
	atomic.StoreUint64(r.cell.claim, 0)
	r.cell.setFlags(0)
}

// adoptClaim takes responsibility for a dead reader's claim: our claim first, so that the
// record is claimed by a live cell at every instant; the takeover of the dead cell decides
// between repairers. Then it finds out whether the dead reader ever took the record
// (resolvePending).
func (r *MPMCReader) adoptClaim(d deadCell) {
	r.cell.setFlags(cellFlagRepair) // before the claim it goes with
	atomic.StoreUint64(r.cell.claim, d.claim)
	if !r.takeOver(&d) {
		atomic.StoreUint64(r.cell.claim, 0)
		r.cell.setFlags(0)
		return
	}
	c := d.claim // as loaded again by the owner: the same unless a peer scribbled on it
	atomic.StoreUint64(r.cell.claim, c)
	freeTaken(d)
	if c == 0 {
		r.cell.setFlags(0)
		return
	}
	r.pending = c
	r.resolvePending()
}

// finishSkip marks the slot of pos, locked by this reader, as a skip and publishes it.
func (r *MPMCReader) finishSkip(slot []byte, pos uint64) {
	putSlotSkip(slot)
	atomic.StoreUint64(slotSeq(slot), r.base(pos)+1) // we hold the lock: a store is enough
	r.stats.add(ctrDrops, 1)
}

// takeOverSkip finishes the skip of a reader that died holding a slot's lock (its claim
// has cellFlagSkip): the takeover of its cell hands the lock to one repairer, which
// publishes the skip if the slot is still locked (the dead reader may have died after
// publishing).
func (r *MPMCReader) takeOverSkip(d deadCell) {
	if r.adopted != 0 || r.pending != 0 {
		return
	}
	r.cell.setFlags(cellFlagSkip) // our claim names the lock before the dead cell goes
	atomic.StoreUint64(r.cell.claim, d.claim)
	if r.takeOver(&d) {
		c, locked := d.claim, d.flags&cellFlagSkip != 0 // as loaded again by the owner
		atomic.StoreUint64(r.cell.claim, c)
		freeTaken(d)
		if pos := c - 1; locked && c != 0 {
			if slot := r.slot(pos); atomic.LoadUint64(slotSeq(slot)) == r.base(pos)-1 {
				r.finishSkip(slot, pos)
			}
		}
	}
	atomic.StoreUint64(r.cell.claim, 0)
	r.cell.setFlags(0)
}

// resolvePending decides about a claim taken over from a dead reader. A reader stores its
// claim before its CAS on the read position, so a dead reader's claim may be of a record it
// never took (its CAS failed, or never ran). The record is owed to nobody but us only if:
// the read position is past it (someone took it); no live reader claims it (whoever took
// it, if alive, shows its claim from before its CAS until after it releases the slot); and
// the slot still holds it (releasing changes the sequence). Checked in that order, a yes to
// all three means the dead reader took it, and we adopt it. A live claim keeps the decision
// pending (it may be a reader whose CAS is about to fail): our cell keeps the claim, and
// this reader claims nothing else meanwhile.
func (r *MPMCReader) resolvePending() {
	c := r.pending
	pos := c - 1
	switch {
	case atomic.LoadUint64(r.readPos)-pos-1 >= r.slots:
		// Nobody took it (or it is from a lap long gone): not ours to deliver.
	case r.readerClaimed(c, false):
		return // decide on a later repair round
	case atomic.LoadUint64(slotSeq(r.slot(pos))) != r.base(pos)+1:
		// Taken and released by a live reader meanwhile.
	default:
		r.cell.setFlags(0) // the claim (already c) is now an ordinary borrow
		r.adopted, r.pending = c, 0
		return
	}
	atomic.StoreUint64(r.cell.claim, 0)
	r.cell.setFlags(0)
	r.pending = 0
}

// readerClaimed reports whether a live reader other than this one claims c (with
// repairers' claims too if withRepairers).
func (r *MPMCReader) readerClaimed(c uint64, withRepairers bool) bool {
	found := false
	r.scanCells(cellReader, func(cl uint64, flags uint32) {
		if cl == c && (withRepairers || flags&cellFlagRepair == 0) {
			found = true
		}
	}, r.cell.claim)
	return found
}

// Release gives the borrowed record's slot back to the writers and wakes one that waits
// for room. Release with nothing borrowed does nothing. After Close it only lets go of the
// segment (another reader delivers the record again).
func (r *MPMCReader) Release() {
	if r.enter() != nil {
		r.afterClose(r.forget)
		return
	}
	defer r.leave()
	r.release()
}

func (r *MPMCReader) release() {
	if r.borrowed {
		pos := r.borrowedPos
		// Release store: our reads of the slot happen before a writer that sees it free
		// (acquire) overwrites it. The exchange that clears the claim orders it before
		// notify's load of the sleepers, and after it, so that a repairer that sees the claim
		// cleared sees the slot released (as in the writer's commit).
		fence.StoreRelease64(slotSeq(r.slot(pos)), r.base(pos)+r.slots)
		atomic.StoreUint64(r.cell.claim, 0)
		switch {
		case r.borrowedMsg && r.rejected:
			r.stats.add(ctrRejected, 1)
		case r.borrowedMsg: // decided from the one read of the length in borrow
			r.stats.add2(ctrMessages, 1, ctrBytes, r.borrowedLen)
		}
		if atomic.LoadUint64(r.events[evSpace].waiters) != 0 { // notify's first test, inline
			r.notify(r.spaceEvent(), 1)
		}
	}
	r.borrowed, r.rejected = false, false
}

func (r *MPMCReader) reject() { r.rejected = true }

// forget drops the Go-side record of what was borrowed (after Close: nothing is released).
func (r *MPMCReader) forget() { r.borrowed, r.rejected = false, false }

func (r *MPMCReader) ep() *endpoint { return &r.mpmcRing.endpoint }

// unborrow keeps the borrowed record for the next call instead of releasing it.
func (r *MPMCReader) unborrow() {
	r.adopted = r.borrowedPos + 1
	r.borrowed = false
}

// Close detaches the reader. A record still borrowed is not released: another reader
// delivers it again. Close wakes a blocked call of this reader. It is safe from any
// goroutine, any number of times.
func (r *MPMCReader) Close() error {
	return r.closeMPMC(func() {
		r.stopStallWatch()
		if r.adopted != 0 {
			atomic.StoreUint64(r.cell.claim, r.adopted) // hand the adopted record on
		}
	})
}

// TryNext borrows the next record in place until Release; it releases a record still
// borrowed first. It never blocks: ErrEmpty, ErrEndOfStream (every writer closed and all
// was read), ErrClosed (after this reader's Close), ErrCorrupt.
func (r *MPMCReader) TryNext() (Record, error) { return next(r, nil) }

// Next is TryNext that waits until a record is published or ctx ends. While it waits it
// repairs what dead peers left: a slot a dead writer claimed and never published is skipped,
// a record a dead reader borrowed is delivered again. With no writer attached yet it waits;
// once every writer that attached died and nothing is left, it returns ErrPeerDead.
func (r *MPMCReader) Next(ctx context.Context) (Record, error) { return next(r, ctx) }

// TryRead copies the next record into dst and releases it. It returns ErrShortBuffer,
// releasing nothing, when dst is too small: the record is then delivered by the next call.
func (r *MPMCReader) TryRead(dst []byte) (int, uint32, error) { return read(r, nil, dst) }

// Read is TryRead that waits like Next.
func (r *MPMCReader) Read(ctx context.Context, dst []byte) (int, uint32, error) {
	return read(r, ctx, dst)
}

// Drain waits like Next until a record is available, then hands fn every available record,
// up to max (all if max <= 0), releasing each slot after fn returns. A record fn rejects
// (an error wrapping ErrRejected) is counted and passed; if fn returns another error, Drain
// stops and the record fn failed on is delivered again by the next call. It returns how
// many records fn accepted.
func (r *MPMCReader) Drain(ctx context.Context, fn func(Record) error, max int) (int, error) {
	return drain(r, ctx, fn, max)
}

// Reject releases the borrowed record, counting it as rejected rather than read.
func (r *MPMCReader) Reject() {
	if r.enter() != nil {
		r.afterClose(r.forget)
		return
	}
	defer r.leave()
	if r.borrowed {
		r.reject()
	}
	r.release()
}

// Ready reports, without blocking or a system call, whether Next would return at once.
func (r *MPMCReader) Ready() bool {
	if r.enter() != nil {
		return true
	}
	defer r.leave()
	return r.ready()
}

// Arm prepares an event loop to sleep until a record is published (see SPSCReader.Arm).
func (r *MPMCReader) Arm() (Wake, bool, error) { return r.arm(r.ready) }

// Disarm undoes Arm. It is idempotent.
func (r *MPMCReader) Disarm() { r.disarm() }
