package ring

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"

	"github.com/shmq/shmq/internal/fence"
	"github.com/shmq/shmq/shm"
)

// SPSCWriter is the one writer of an SPSC ring. Exactly one writer may be attached to a
// ring at a time, across all processes; its role is free again when it closes or its
// process dies.
//
// Its methods must be called from one goroutine at a time, except Close, which may be called
// from any goroutine, any number of times, and wakes a blocked call.
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

// NewSPSCWriter attaches a writer to an SPSC segment and opens the stream (a new stream if
// the last one ended). It returns ErrKind for another kind of segment, ErrVersion for
// another ring format, ErrBusy when a live writer holds the role, ErrCorrupt when the
// ring's positions are out of range, and shm's errors (ErrReadOnly).
//
// A writer that takes over from a dead one continues from the last published position;
// what the dead writer reserved but did not commit is overwritten.
func NewSPSCWriter(seg *shm.Segment, opts Options) (*SPSCWriter, error) {
	w := &SPSCWriter{}
	w.holds = func() bool { return w.pending > 0 }
	if err := w.attach(seg, SPSC, writerSide, roleSPSCWriter, opts, w.Close); err != nil {
		return nil, err
	}
	err := w.guarded(func() error {
		w.writePos, w.readPos = w.u64(offWritePos), w.u64(offReadPos)
		w.pos = atomic.LoadUint64(w.writePos)
		w.cachedRead = atomic.LoadUint64(w.readPos)
		w.maxMsg = SPSCMaxMessage(uint64(len(w.data)))
		return checkSPSCPositions(w.pos, w.cachedRead, uint64(len(w.data)))
	})
	if err := w.finishAttach(err, w.openStream); err != nil {
		return nil, err
	}
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
	size := uint64(len(w.data))
	rec := recordSpan(n)
	idx := w.pos & w.mask
	pad := uint64(0)
	if toEnd := size - idx; rec > toEnd {
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
		putSPSCPadding(w.data, idx)
		w.pos += pad
		idx = 0
	}
	putSPSCHeader(w.data, idx, typ, n)
	w.pos += rec
	w.pending++
	w.pendingLen += uint64(n)
	start := idx + recordHeader
	return w.data[start : start+uint64(n) : start+uint64(n)], nil
}

// need is the room a record of n bytes takes at the current position, padding included.
func (w *SPSCWriter) need(n int) uint64 {
	rec := recordSpan(n)
	if toEnd := uint64(len(w.data)) - w.pos&w.mask; rec > toEnd {
		rec += toEnd
	}
	return rec
}

// hasRoom reports whether need more bytes fit, reloading the reader's position only when
// the cached one says they do not. The loaded position is checked before it is used: a
// reader can never be ahead of what was published, nor more than a ring behind.
func (w *SPSCWriter) hasRoom(need uint64) bool {
	size := uint64(len(w.data))
	if w.pos+need-w.cachedRead <= size {
		return true
	}
	rp := atomic.LoadUint64(w.readPos) // pairs with the reader's store in release
	if err := checkSPSCPositions(w.pos, rp, size); err != nil {
		// Impossible for a correct reader: refuse to overwrite rather than trust it.
		w.corrupt = err
		return false
	}
	w.cachedRead = rp
	return w.pos+need-rp <= size
}

// Reserve is TryReserve that waits for room, by the endpoint's wait strategy, until ctx
// ends. If the ring is full while records are reserved, it commits them first so that the
// reader can make room. A writer with no reader attached (yet, or since it closed) waits.
// It returns ErrPeerDead when the reader's process died and no new reader attached, ctx's
// error when ctx ends, ErrClosed when the writer is closed meanwhile.
func (w *SPSCWriter) Reserve(ctx context.Context, typ uint32, n int) ([]byte, error) {
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
func (w *SPSCWriter) reserveSlow(ctx context.Context, typ uint32, n int) (p []byte, err error) {
	defer w.catch(debug.SetPanicOnFault(true), &err)
	for {
		if w.pending > 0 {
			w.commit()
		}
		if err := w.awaitRoom(ctx, w.need(n)); err != nil {
			return nil, err
		}
		p, err := w.tryReserve(typ, n)
		if err != ErrFull {
			return p, err
		}
	}
}

// ReserveBatch reserves up to count records of n payload bytes each, of type typ, appends
// their payloads to dst, and returns it; one Commit publishes them together. It reserves as
// many as fit now, at least one: with no room for one it commits what is reserved and waits
// like Reserve. Errors as Reserve. It costs less per record than count Reserves.
func (w *SPSCWriter) ReserveBatch(ctx context.Context, typ uint32, n, count int, dst [][]byte) ([][]byte, error) {
	if err := w.enter(); err != nil {
		return dst, err
	}
	defer w.leave()
	if n < 0 || n > w.maxMsg {
		return dst, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, n, w.maxMsg)
	}
	dst, got, err := w.reserveBatchOnce(typ, n, count, dst)
	if err != nil || got > 0 || count <= 0 {
		return dst, err
	}
	return w.reserveBatchSlow(ctx, typ, n, count, dst)
}

// reserveBatchOnce reserves as many of count records as fit now, without waiting.
func (w *SPSCWriter) reserveBatchOnce(typ uint32, n, count int, dst [][]byte) ([][]byte, int, error) {
	got := 0
	for got < count {
		k := w.reserveRun(typ, n, count-got, &dst)
		if k == 0 {
			// The run ends at the end of the region (padding first) or the ring looks
			// full: one record the careful way.
			p, err := w.tryReserve(typ, n)
			if err == ErrFull {
				break
			}
			if err != nil {
				return dst, got, err
			}
			dst = append(dst, p)
			k = 1
		}
		got += k
	}
	return dst, got, nil
}

// reserveBatchSlow is ReserveBatch once the ring was found full: it commits what is
// reserved, waits and reserves, under SetPanicOnFault (see fault.go).
func (w *SPSCWriter) reserveBatchSlow(ctx context.Context, typ uint32, n, count int, dst [][]byte) (_ [][]byte, err error) {
	defer w.catch(debug.SetPanicOnFault(true), &err)
	for {
		if w.pending > 0 {
			w.commit()
		}
		if err := w.awaitRoom(ctx, w.need(n)); err != nil {
			return dst, err
		}
		var got int
		if dst, got, err = w.reserveBatchOnce(typ, n, count, dst); err != nil || got > 0 {
			return dst, err
		}
	}
}

// reserveRun reserves up to count records of n payload bytes (n checked by the caller)
// that fit one after the other before the end of the data region and in the room the cached
// read position already grants, appends their payloads to dst, and returns how many. The
// room is checked once for the run, not per record. It returns 0 when the next record needs
// padding first or the cached position says the ring is full: tryReserve handles those
// (and reloads the read position).
func (w *SPSCWriter) reserveRun(typ uint32, n, count int, dst *[][]byte) int {
	size := uint64(len(w.data))
	rec := recordSpan(n)
	idx := w.pos & w.mask
	room := size - (w.pos - w.cachedRead) // cachedRead was checked when loaded
	k := min(uint64(count), (size-idx)/rec, room/rec)
	if k == 0 {
		return 0
	}
	data := w.data[idx : idx+k*rec]
	for i := uint64(0); i < k; i++ {
		off := i * rec
		putSPSCHeader(data, off, typ, n)
		start := off + recordHeader
		*dst = append(*dst, data[start:start+uint64(n):start+uint64(n)])
	}
	w.pos += k * rec
	w.pending += k
	w.pendingLen += k * uint64(n)
	return int(k)
}

func (w *SPSCWriter) awaitRoom(ctx context.Context, need uint64) error {
	ready := func() bool { return w.hasRoom(need) }
	check := func(expensive bool) error {
		if w.corrupt != nil {
			return w.corrupt
		}
		if !expensive {
			return nil
		}
		dead, err := w.otherSideDead()
		if err != nil || !dead || w.hasRoom(need) {
			return err
		}
		return ErrPeerDead
	}
	return w.wait.await(ctx, w.spaceEvent(), ready, check)
}

// Commit publishes every record reserved since the last Commit with one store, and wakes
// the reader if it sleeps. It returns ErrNotReserved if nothing is reserved.
func (w *SPSCWriter) Commit() error {
	if err := w.enter(); err != nil {
		w.afterClose(w.forgetPending)
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
	w.stats.add2(ctrMessages, w.pending, ctrBytes, w.pendingLen)
	w.pending, w.pendingLen = 0, 0
	// notify's first test, inline: with no sleeper marked (the common case) no call. The
	// exchange above orders the publish before this load, as the eventcount needs.
	if atomic.LoadUint64(w.events[evData].waiters) != 0 {
		w.notify(w.dataEvent(), 1)
	}
}

// Abort discards every record reserved since the last Commit: the reader never sees them.
func (w *SPSCWriter) Abort() {
	if w.enter() != nil {
		w.afterClose(w.forgetPending)
		return
	}
	defer w.leave()
	w.abort()
}

// forgetPending drops the Go-side record of what was reserved (a broken or closed writer:
// nothing is published or skipped).
func (w *SPSCWriter) forgetPending() { w.pending, w.pendingLen = 0, 0 }

func (w *SPSCWriter) abort() {
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
	if err := w.writeOnce(typ, p); err != ErrFull {
		return err
	}
	return w.writeSlow(ctx, typ, p)
}

// writeOnce copies p into one record of type typ and publishes it, if it fits now: ErrFull
// if not.
func (w *SPSCWriter) writeOnce(typ uint32, p []byte) error {
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
func (w *SPSCWriter) writeSlow(ctx context.Context, typ uint32, p []byte) (err error) {
	defer w.catch(debug.SetPanicOnFault(true), &err)
	for {
		if err := w.awaitRoom(ctx, w.need(len(p))); err != nil {
			return err
		}
		if err := w.writeOnce(typ, p); err != ErrFull {
			return err
		}
	}
}

// Ready reports, without blocking or a system call, whether a record of n bytes fits now
// (or the writer is closed, so that a call returns at once).
func (w *SPSCWriter) Ready(n int) bool {
	if w.enter() != nil {
		return true
	}
	defer w.leave()
	return n > w.maxMsg || w.hasRoom(w.need(n))
}

// Arm prepares an event loop to sleep until a record of n bytes fits: it marks this process
// as waiting for room and returns the futex word to sleep on. It returns false, and marks
// nothing, when the record fits already. Call Disarm once woken.
func (w *SPSCWriter) Arm(n int) (Wake, bool, error) {
	return w.arm(func() bool { return n > w.maxMsg || w.hasRoom(w.need(n)) })
}

// Disarm undoes Arm. It is idempotent.
func (w *SPSCWriter) Disarm() { w.disarm() }

// Close detaches the writer. Reserved records that were not committed are discarded. The
// writer was the ring's only one, so the stream ends: readers drain what was committed and
// then get ErrEndOfStream, until a new writer attaches. Close wakes a blocked call of this
// writer, which returns ErrClosed. It is safe from any goroutine, any number of times.
func (w *SPSCWriter) Close() error { return w.close(w.abort) }

// SPSCReader is the one reader of an SPSC ring. Exactly one reader may be attached at a
// time, across all processes; its role is free again when it closes or its process dies.
// A reader that takes over from a dead one starts at the last released position, so
// records the dead reader had borrowed but not released are delivered again
// (at-least-once across a reader crash).
//
// Its methods must be called from one goroutine at a time, except Close, which may be
// called from any goroutine, any number of times, and wakes a blocked call.
type SPSCReader struct {
	endpoint
	writePos    *uint64
	readPos     *uint64
	next        uint64 // local position: released plus what is borrowed
	cachedWrite uint64 // last writePos seen, checked: reloaded only when the ring looks empty
	badWrite    error  // set when the last load of writePos was impossible (then next == cachedWrite)
	maxLen      uint64 // SPSCMaxMessage of the region
	borrowed    uint64 // records borrowed since the last Release
	borrowedLen uint64
	rejected    uint64 // of them, rejected
	lastLen     uint64 // payload bytes of the last record borrowed
	lastStart   uint64 // its position (before padding)
}

// NewSPSCReader attaches a reader to an SPSC segment. Errors as NewSPSCWriter.
func NewSPSCReader(seg *shm.Segment, opts Options) (*SPSCReader, error) {
	r := &SPSCReader{}
	r.holds = func() bool { return r.borrowed > 0 }
	if err := r.attach(seg, SPSC, readerSide, roleSPSCReader, opts, r.Close); err != nil {
		return nil, err
	}
	err := r.guarded(func() error {
		r.writePos, r.readPos = r.u64(offWritePos), r.u64(offReadPos)
		r.next = atomic.LoadUint64(r.readPos)
		r.cachedWrite = atomic.LoadUint64(r.writePos)
		r.maxLen = uint64(SPSCMaxMessage(uint64(len(r.data))))
		return checkSPSCPositions(r.cachedWrite, r.next, uint64(len(r.data)))
	})
	if err := r.finishAttach(err, nil); err != nil {
		return nil, err
	}
	return r, nil
}

// available reports whether a record is published past the local position, reloading the
// writer's position only when the cached one says there is none (the Disruptor's cached
// cursor). A loaded position is checked against the local one once, when it is loaded, and
// kept only if it is possible; an impossible one is kept aside in badWrite, for tryNext to
// report, and reported as available so that a caller goes on to tryNext. Every position
// the reader reaches from a checked one stays within it (parseSPSCAt), so the records
// behind a cached position need no position check of their own.
func (r *SPSCReader) available() bool {
	if r.next != r.cachedWrite {
		return true
	}
	wp := atomic.LoadUint64(r.writePos) // pairs with the writer's store in commit
	if wp == r.next {
		r.badWrite = nil
		return false
	}
	if err := checkSPSCPositions(wp, r.next, uint64(len(r.data))); err != nil {
		r.badWrite = err // cachedWrite stays next: the next call loads again
		return true
	}
	r.cachedWrite, r.badWrite = wp, nil
	return true
}

func (r *SPSCReader) tryNext() (Record, error) {
	if start, n, typ, next, ok := parseSPSCFast(r.data, r.next, r.cachedWrite, r.maxLen); ok {
		return r.borrow(start, n, typ, next), nil
	}
	if r.next == r.cachedWrite && !r.available() {
		if !r.streamEnded() {
			r.stats.add(ctrEmpty, 1)
			return Record{}, ErrEmpty
		}
		if !r.available() { // loaded after the end: the last records are not missed
			return Record{}, ErrEndOfStream
		}
	}
	if r.badWrite != nil {
		return Record{}, r.badWrite
	}
	start, n, typ, next, err := parseSPSCAt(r.data, r.next, r.cachedWrite)
	if err != nil {
		return Record{}, err
	}
	return r.borrow(start, n, typ, next), nil
}

// borrow takes the record parsed at the local position: its payload at start, n bytes,
// of type typ, ending at next.
func (r *SPSCReader) borrow(start, n uint64, typ uint32, next uint64) Record {
	r.lastStart = r.next
	r.next = next
	r.lastLen = n
	r.borrowed++
	r.borrowedLen += n
	end := start + n
	return Record{Type: typ, Data: r.data[start:end:end]}
}

func (r *SPSCReader) awaitData(ctx context.Context) error {
	return r.wait.await(ctx, r.dataEvent(), r.ready, r.checkPeers)
}

// checkPeers is awaitData's check (see waiter.await) and, expensive, Maintain's.
func (r *SPSCReader) checkPeers(expensive bool) error {
	if r.streamEnded() {
		if r.available() {
			return nil
		}
		return ErrEndOfStream
	}
	if !expensive {
		return nil
	}
	dead, err := r.otherSideDead()
	if err != nil || !dead || r.available() {
		return err
	}
	return ErrPeerDead
}

// Maintain runs the liveness check a blocked Next makes: see Reader.
func (r *SPSCReader) Maintain() error { return maintain(&r.endpoint, r.checkPeers) }

// ready reports whether a call would not find the ring empty: a record, or the end.
func (r *SPSCReader) ready() bool { return r.available() || r.streamEnded() }

// Release gives every borrowed record back to the writer with one store, and wakes the
// writer if it waits for room. Records from Next, TryNext and Drain must not be used
// afterwards. Release with nothing borrowed does nothing. After Close it only lets go of
// the segment (the records stay in the ring for the next reader).
func (r *SPSCReader) Release() {
	if r.enter() != nil {
		r.afterClose(r.forget)
		return
	}
	defer r.leave()
	r.release()
}

func (r *SPSCReader) release() {
	if r.borrowed > 0 {
		// Release store: our reads of the records happen before it, and the writer that
		// loads the new position (acquire) may overwrite them.
		atomic.StoreUint64(r.readPos, r.next)
		r.stats.add2(ctrMessages, r.borrowed-r.rejected, ctrBytes, r.borrowedLen)
		if r.rejected != 0 {
			r.stats.add(ctrRejected, r.rejected)
		}
		if atomic.LoadUint64(r.events[evSpace].waiters) != 0 { // as in commit
			r.notify(r.spaceEvent(), 1)
		}
	}
	r.borrowed, r.borrowedLen, r.rejected = 0, 0, 0
}

// forget drops the Go-side record of what was borrowed (after Close: nothing is released).
func (r *SPSCReader) forget() { r.borrowed, r.borrowedLen, r.rejected = 0, 0, 0 }

func (r *SPSCReader) ep() *endpoint { return &r.endpoint }

// reject marks the last record borrowed as rejected; release counts it.
func (r *SPSCReader) reject() { r.rejected++ }

// unborrow steps back over the record just borrowed so that it is read again.
func (r *SPSCReader) unborrow() {
	r.next = r.lastStart
	r.borrowed--
	r.borrowedLen -= r.lastLen
}

// Close detaches the reader. Records still borrowed are not released: the next reader gets
// them again; their memory stays mapped until Release (or Reject) lets go of them. Close wakes a blocked call of this
// reader, which returns ErrClosed. It is safe from any goroutine, any number of times.
func (r *SPSCReader) Close() error { return r.close(nil) }

// TryNext borrows the next record in place. It stays valid, and the reader does not
// advance past it for the writer, until Release. Calling TryNext again before Release
// borrows the following record too. It never blocks: ErrEmpty when nothing is published,
// ErrEndOfStream when the writer closed and everything was read, ErrClosed after this
// reader's Close, ErrCorrupt when the shared state is inconsistent.
func (r *SPSCReader) TryNext() (Record, error) { return next(r, nil) }

// Next is TryNext that waits, by the endpoint's wait strategy, until a record is published
// or ctx ends. With no writer attached yet it waits. Once the writer's process has died and
// every committed record was read, it returns ErrPeerDead (until a new writer attaches).
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
// store. If fn returns an error wrapping ErrRejected (see Reject), the record is counted as
// rejected and Drain goes on. If fn returns another error, Drain stops: the records before
// it are released, the one fn failed on stays in the ring, and the error is returned. It
// returns how many records fn accepted.
func (r *SPSCReader) Drain(ctx context.Context, fn func(Record) error, max int) (n int, err error) {
	if err := r.enter(); err != nil {
		return 0, err
	}
	defer r.endGuarded(debug.SetPanicOnFault(true), &err) // and leave; see fault.go
	// As read.go's drain, written out for the concrete type so that the common case of
	// tryNext (parseSPSCFast and borrow) is inlined: with it, a batched record costs about
	// half (35-39 -> 15-16 ns in process, BenchmarkInProcessBatch/spsc).
	seen := 0
	for max <= 0 || seen < max {
		var rec Record
		var err error
		if start, n, typ, next, ok := parseSPSCFast(r.data, r.next, r.cachedWrite, r.maxLen); ok {
			rec = r.borrow(start, n, typ, next) // tryNext's fast path, inlined
		} else {
			rec, err = r.tryNext()
		}
		if err != nil {
			if err == ErrEmpty && seen == 0 {
				if ctx == nil {
					return 0, ErrEmpty
				}
				if err := r.awaitData(ctx); err != nil {
					return 0, err
				}
				continue
			}
			if err == ErrEmpty || (err == ErrEndOfStream && seen > 0) {
				break
			}
			r.release()
			return n, err
		}
		seen++
		// callback's marks, inline (see callback in read.go).
		fence.StoreRelease32(&r.inCallback, 1)
		err = fn(rec)
		fence.StoreRelease32(&r.inCallback, 0)
		if r.isClosed() {
			// Closed while fn ran (possibly by fn): touch nothing shared; let go of the
			// records once Close is done.
			r.leave()
			r.afterClose(r.forget)
			return n, ErrClosed
		}
		if err != nil {
			if errors.Is(err, ErrRejected) {
				r.reject()
				continue
			}
			r.unborrow()
			r.release()
			return n, err
		}
		n++
	}
	r.release()
	return n, nil
}

// Reject releases everything borrowed, like Release, counting the last record borrowed as
// rejected rather than read: for a consumer that refuses a record (to send it to a
// dead-letter queue, say) and goes on.
func (r *SPSCReader) Reject() {
	if r.enter() != nil {
		r.afterClose(r.forget)
		return
	}
	defer r.leave()
	if r.borrowed > 0 {
		r.reject()
	}
	r.release()
}

// Ready reports, without blocking or a system call, whether Next would return at once: a
// record is published, the stream ended, or the reader is closed.
func (r *SPSCReader) Ready() bool {
	if r.enter() != nil {
		return true
	}
	defer r.leave()
	return r.ready()
}

// Arm prepares an event loop to sleep until a record is published: it marks this process
// as waiting for data and returns the futex word to sleep on. It returns false, and marks
// nothing, when the reader is ready already. Call Disarm once woken.
func (r *SPSCReader) Arm() (Wake, bool, error) { return r.arm(r.ready) }

// Disarm undoes Arm. It is idempotent.
func (r *SPSCReader) Disarm() { r.disarm() }
