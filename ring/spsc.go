package ring

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/shmq/shmq/shm"
)

// SPSC record format: an 8-byte header (payload length uint32, type uint32, little-endian)
// and the payload, padded to 8 bytes. A record that would cross the end of the data region
// is preceded by a padding record whose length word is padLength and which runs to the end.
const (
	recordHeader = 8
	padLength    = ^uint32(0)
)

// SPSCMaxMessage is the largest payload an SPSC ring with a data region of size bytes
// carries: half the ring minus a record header, so that a record plus the padding before it
// always fits.
func SPSCMaxMessage(size uint64) int { return int(size/2 - recordHeader) }

// SPSCWriter is the one writer of an SPSC ring. Exactly one writer may be attached to a
// ring at a time, across all processes; its role is free again when it closes or its
// process dies.
//
// Its methods must be called from one goroutine at a time, except Close, which may be called
// from any goroutine and wakes a blocked call.
type SPSCWriter struct {
	endpoint
	writePos   *uint64 // published position; only this writer stores it
	readPos    *uint64 // the reader's released position
	pos        uint64  // local position: published plus what is reserved
	cachedRead uint64  // last readPos seen: reloaded only when the ring looks full
	pending    uint64  // records reserved since the last commit
	pendingLen uint64  // their payload bytes
	maxMsg     int
	corrupt    error // set once the reader's position was found impossible
}

// NewSPSCWriter attaches a writer to an SPSC segment. It returns ErrKind for another kind of
// segment, ErrBusy when a live writer holds the role, ErrCorrupt when the ring's positions
// are out of range, and shm's errors (ErrReadOnly, ErrPeerTableFull, ErrClosed).
//
// A writer that takes over from a dead one continues from the last published position;
// what the dead writer reserved but did not commit is overwritten.
func NewSPSCWriter(seg *shm.Segment, opts Options) (*SPSCWriter, error) {
	w := &SPSCWriter{}
	if err := w.attach(seg, shm.KindSPSC, shm.RoleWriter, true, opts); err != nil {
		return nil, err
	}
	w.writePos, w.readPos = w.u64(offWritePos), w.u64(offReadPos)
	w.pos = atomic.LoadUint64(w.writePos)
	w.cachedRead = atomic.LoadUint64(w.readPos)
	if w.pos-w.cachedRead > w.size {
		w.shutdown(w.spaceEvent(), offRetiredWriter, nil)
		return nil, fmt.Errorf("%w: write position %d, read position %d, ring of %d", ErrCorrupt, w.pos, w.cachedRead, w.size)
	}
	w.maxMsg = SPSCMaxMessage(w.size)
	atomic.StoreUint32(w.u32(offWriterState), writerAttached)
	return w, nil
}

// MaxMessage is the largest payload this ring carries.
func (w *SPSCWriter) MaxMessage() int { return w.maxMsg }

// TryReserve reserves room for a record of n payload bytes with the given type and returns
// the payload, to be filled in place and published by Commit. Several records may be
// reserved before one Commit (a batch). It never blocks: ErrFull when there is no room,
// ErrTooLarge when n exceeds MaxMessage, ErrClosed after Close.
func (w *SPSCWriter) TryReserve(typ uint32, n int) ([]byte, error) {
	if err := w.enter(); err != nil {
		return nil, err
	}
	defer w.leave()
	return w.tryReserve(typ, n)
}

func (w *SPSCWriter) tryReserve(typ uint32, n int) ([]byte, error) {
	if n < 0 || n > w.maxMsg {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, n, w.maxMsg)
	}
	rec := align8(recordHeader + uint64(n))
	idx := w.pos & w.mask
	pad := uint64(0)
	if toEnd := w.size - idx; rec > toEnd {
		pad = toEnd
	}
	if !w.hasRoom(pad + rec) {
		if w.corrupt != nil {
			return nil, w.corrupt
		}
		w.stats.add(ctrFull, 1)
		return nil, ErrFull
	}
	if pad > 0 {
		binary.LittleEndian.PutUint32(w.data[idx:], padLength)
		w.pos += pad
		idx = 0
	}
	binary.LittleEndian.PutUint32(w.data[idx:], uint32(n))
	binary.LittleEndian.PutUint32(w.data[idx+4:], typ)
	w.pos += rec
	w.pending++
	w.pendingLen += uint64(n)
	start := idx + recordHeader
	return w.data[start : start+uint64(n) : start+uint64(n)], nil
}

// hasRoom reports whether need more bytes fit, reloading the reader's position only when
// the cached one says they do not. The loaded position is checked before it is used: a
// reader can never be ahead of what was published, nor more than a ring behind.
func (w *SPSCWriter) hasRoom(need uint64) bool {
	if w.pos+need-w.cachedRead <= w.size {
		return true
	}
	rp := atomic.LoadUint64(w.readPos) // pairs with the reader's store in Release
	if w.pos-rp > w.size {
		// Impossible for a correct reader: refuse to overwrite rather than trust it.
		w.corrupt = fmt.Errorf("%w: read position %d is not within a ring of write position %d", ErrCorrupt, rp, w.pos)
		return false
	}
	w.cachedRead = rp
	return w.pos+need-rp <= w.size
}

// Reserve is TryReserve that waits for room, by the endpoint's wait strategy, until ctx
// ends. If the ring is full while records are reserved, it commits them first so that the
// reader can make room. It returns ErrPeerDead when the reader's process died and the ring
// stays full, ctx's error when ctx ends.
func (w *SPSCWriter) Reserve(ctx context.Context, typ uint32, n int) ([]byte, error) {
	if err := w.enter(); err != nil {
		return nil, err
	}
	defer w.leave()
	for {
		p, err := w.tryReserve(typ, n)
		if err != ErrFull {
			return p, err
		}
		if w.pending > 0 {
			w.commit()
		}
		rec := align8(recordHeader + uint64(n))
		if toEnd := w.size - w.pos&w.mask; rec > toEnd {
			rec += toEnd
		}
		if err := w.awaitRoom(ctx, rec); err != nil {
			return nil, err
		}
	}
}

func (w *SPSCWriter) awaitRoom(ctx context.Context, need uint64) error {
	ready := func() bool { return w.hasRoom(need) }
	check := func(expensive bool) error {
		if w.corrupt != nil {
			return w.corrupt
		}
		if !expensive || atomic.LoadUint32(w.u32(offReaderState)) != readerAttached {
			return nil
		}
		if held, err := w.seg.RoleHeld(shm.RoleReader); err != nil || held {
			return err
		}
		if w.hasRoom(need) {
			return nil
		}
		return ErrPeerDead
	}
	return w.wait.await(ctx, w.spaceEvent(), ready, check)
}

// Commit publishes every record reserved since the last Commit with one store, and wakes
// the reader if it sleeps. It returns ErrNotReserved if nothing is reserved.
func (w *SPSCWriter) Commit() error {
	if err := w.enter(); err != nil {
		return err
	}
	defer w.leave()
	if w.pending == 0 {
		return ErrNotReserved
	}
	w.commit()
	return nil
}

func (w *SPSCWriter) commit() {
	// Release store: the record bytes written above happen before it, and a reader that
	// loads the new position (acquire) sees them.
	atomic.StoreUint64(w.writePos, w.pos)
	w.stats.add(ctrMessages, w.pending)
	w.stats.add(ctrBytes, w.pendingLen)
	w.pending, w.pendingLen = 0, 0
	w.notify(w.dataEvent(), 1)
}

// Abort discards every record reserved since the last Commit: the reader never sees them.
func (w *SPSCWriter) Abort() {
	if w.enter() != nil {
		return
	}
	defer w.leave()
	w.pos = atomic.LoadUint64(w.writePos) // only this writer stores it
	w.pending, w.pendingLen = 0, 0
}

// TryWrite copies p into one record of type typ and publishes it. It never blocks:
// ErrFull, ErrTooLarge, ErrClosed, ErrPending (records reserved and not committed).
func (w *SPSCWriter) TryWrite(typ uint32, p []byte) error {
	if err := w.enter(); err != nil {
		return err
	}
	defer w.leave()
	if w.pending > 0 {
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

// Write is TryWrite that waits for room until ctx ends (see Reserve).
func (w *SPSCWriter) Write(ctx context.Context, typ uint32, p []byte) error {
	if err := w.enter(); err != nil {
		return err
	}
	defer w.leave()
	if w.pending > 0 {
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
		rec := align8(recordHeader + uint64(len(p)))
		if toEnd := w.size - w.pos&w.mask; rec > toEnd {
			rec += toEnd
		}
		if err := w.awaitRoom(ctx, rec); err != nil {
			return err
		}
	}
}

// Close ends the stream: readers drain what was committed and then get ErrClosed, until a
// new writer attaches. Reserved records that were not committed are discarded. Close wakes
// a blocked call of this writer, which returns ErrClosed. It is idempotent.
func (w *SPSCWriter) Close() error {
	return w.shutdown(w.spaceEvent(), offRetiredWriter, func() {
		atomic.StoreUint32(w.u32(offWriterState), writerClosed)
		w.dataEvent().wakeAll()
	})
}

// SPSCReader is the one reader of an SPSC ring. Exactly one reader may be attached at a
// time, across all processes; its role is free again when it closes or its process dies.
// A reader that takes over from a dead one starts at the last released position, so
// records the dead reader had borrowed but not released are delivered again
// (at-least-once across a reader crash).
//
// Its methods must be called from one goroutine at a time, except Close, which may be
// called from any goroutine and wakes a blocked call.
type SPSCReader struct {
	endpoint
	writePos    *uint64
	readPos     *uint64
	next        uint64 // local position: released plus what is borrowed
	cachedWrite uint64 // last writePos seen: reloaded only when the ring looks empty
	borrowed    uint64 // records borrowed since the last Release
	borrowedLen uint64
	pinned      bool // the segment is pinned while records are borrowed
	maxMsg      uint64
}

// NewSPSCReader attaches a reader to an SPSC segment. Errors as NewSPSCWriter.
func NewSPSCReader(seg *shm.Segment, opts Options) (*SPSCReader, error) {
	r := &SPSCReader{}
	if err := r.attach(seg, shm.KindSPSC, shm.RoleReader, true, opts); err != nil {
		return nil, err
	}
	r.writePos, r.readPos = r.u64(offWritePos), r.u64(offReadPos)
	r.next = atomic.LoadUint64(r.readPos)
	r.cachedWrite = atomic.LoadUint64(r.writePos)
	if r.cachedWrite-r.next > r.size {
		r.shutdown(r.dataEvent(), offRetiredReader, nil)
		return nil, fmt.Errorf("%w: write position %d, read position %d, ring of %d", ErrCorrupt, r.cachedWrite, r.next, r.size)
	}
	r.maxMsg = uint64(SPSCMaxMessage(r.size))
	atomic.StoreUint32(r.u32(offReaderState), readerAttached)
	return r, nil
}

// available reports whether a record is published past the local position, reloading the
// writer's position only when the cached one says there is none.
func (r *SPSCReader) available() bool {
	if r.next != r.cachedWrite {
		return true
	}
	r.cachedWrite = atomic.LoadUint64(r.writePos) // pairs with the writer's store in commit
	return r.next != r.cachedWrite
}

func (r *SPSCReader) tryNext() (Record, error) {
	if !r.available() {
		if atomic.LoadUint32(r.u32(offWriterState)) == writerClosed && !r.available() {
			return Record{}, ErrClosed
		}
		r.stats.add(ctrEmpty, 1)
		return Record{}, ErrEmpty
	}
	// Every value below comes from shared memory: the position was loaded once (cachedWrite)
	// and each header word is read once, then checked before it is used.
	if r.cachedWrite-r.next > r.size {
		return Record{}, fmt.Errorf("%w: write position %d is not within a ring of read position %d", ErrCorrupt, r.cachedWrite, r.next)
	}
	idx := r.next & r.mask
	length := binary.LittleEndian.Uint32(r.data[idx:])
	if length == padLength {
		if skip := r.size - idx; skip < r.cachedWrite-r.next {
			r.next += skip
		} else {
			return Record{}, fmt.Errorf("%w: padding at position %d runs past the write position", ErrCorrupt, r.next)
		}
		if !r.available() {
			return Record{}, ErrEmpty
		}
		idx = 0
		length = binary.LittleEndian.Uint32(r.data[idx:])
	}
	typ := binary.LittleEndian.Uint32(r.data[idx+4:])
	rec := align8(recordHeader + uint64(length))
	if uint64(length) > r.maxMsg || rec > r.size-idx || rec > r.cachedWrite-r.next {
		return Record{}, fmt.Errorf("%w: record of %d bytes at position %d does not fit", ErrCorrupt, length, r.next)
	}
	if !r.pinned {
		if err := r.seg.Pin(); err != nil {
			return Record{}, err
		}
		r.pinned = true
	}
	r.next += rec
	r.borrowed++
	r.borrowedLen += uint64(length)
	start := idx + recordHeader
	return Record{Type: typ, Data: r.data[start : start+uint64(length) : start+uint64(length)]}, nil
}

func (r *SPSCReader) awaitData(ctx context.Context) error {
	check := func(expensive bool) error {
		switch atomic.LoadUint32(r.u32(offWriterState)) {
		case writerClosed:
			if r.available() {
				return nil
			}
			return ErrClosed
		case writerAttached:
			if !expensive {
				return nil
			}
			held, err := r.seg.RoleHeld(shm.RoleWriter)
			if err != nil || held || r.available() {
				return err
			}
			return ErrPeerDead
		}
		return nil
	}
	return r.wait.await(ctx, r.dataEvent(), r.available, check)
}

// Release gives every borrowed record back to the writer with one store, and wakes the
// writer if it waits for room. Records from Next, TryNext and Drain must not be used
// afterwards. Release with nothing borrowed does nothing.
func (r *SPSCReader) Release() {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.release()
}

func (r *SPSCReader) release() {
	if r.pinned {
		r.seg.Unpin()
		r.pinned = false
	}
	if r.borrowed == 0 || r.closed.Load() {
		return
	}
	// Release store: our reads of the records happen before it, and the writer that loads
	// the new position (acquire) may overwrite them.
	atomic.StoreUint64(r.readPos, r.next)
	r.stats.add(ctrMessages, r.borrowed)
	r.stats.add(ctrBytes, r.borrowedLen)
	r.borrowed, r.borrowedLen = 0, 0
	r.notify(r.spaceEvent(), 1)
}

// unborrow steps back over the record just borrowed (of length payload bytes) so that it
// is read again.
func (r *SPSCReader) unborrow(length int) {
	r.next -= align8(recordHeader + uint64(length))
	r.borrowed--
	r.borrowedLen -= uint64(length)
	if r.borrowed == 0 && r.pinned {
		r.seg.Unpin()
		r.pinned = false
	}
}

// Close detaches the reader. Records still borrowed are not released: the next reader gets
// them again. The segment stays pinned until they are released with Release, so unmapping
// it waits for them. Close wakes a blocked call of this reader, which returns ErrClosed. It
// is idempotent.
func (r *SPSCReader) Close() error {
	return r.shutdown(r.dataEvent(), offRetiredReader, func() {
		atomic.StoreUint32(r.u32(offReaderState), readerNone)
	})
}

// TryNext borrows the next record in place. It stays valid, and the reader does not
// advance past it for the writer, until Release. Calling TryNext again before Release
// borrows the following record too. It never blocks: ErrEmpty when nothing is published,
// ErrClosed when the writer closed and everything was read (or after this reader's Close),
// ErrCorrupt when the shared state is inconsistent.
func (r *SPSCReader) TryNext() (Record, error) { return next(r, nil) }

// Next is TryNext that waits, by the endpoint's wait strategy, until a record is published
// or ctx ends. Once the writer's process has died and every committed record was read, it
// returns ErrPeerDead (until a new writer attaches).
func (r *SPSCReader) Next(ctx context.Context) (Record, error) { return next(r, ctx) }

// TryRead copies the next record into dst and releases it, with anything borrowed before.
// It returns the payload length and the record type; ErrShortBuffer (the record stays in
// the ring) when dst is too small, and TryNext's errors.
func (r *SPSCReader) TryRead(dst []byte) (int, uint32, error) { return read(r, nil, dst) }

// Read is TryRead that waits like Next.
func (r *SPSCReader) Read(ctx context.Context, dst []byte) (int, uint32, error) {
	return read(r, ctx, dst)
}

// Drain waits like Next until at least one record is available, then hands fn every
// available record, up to max (all if max <= 0), in place, and releases them with one
// store. If fn returns an error, Drain stops: the records before it are released, the one
// fn failed on stays in the ring, and the error is returned. It returns how many records fn
// accepted.
func (r *SPSCReader) Drain(ctx context.Context, fn func(Record) error, max int) (int, error) {
	return drain(r, ctx, fn, max)
}
