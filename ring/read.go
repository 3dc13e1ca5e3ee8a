package ring

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/shmq/shmq/internal/fence"
)

// endGuarded is deferred by the operations that run under SetPanicOnFault whole (Read,
// Drain), with the goroutine's previous setting: it clears the callback mark (Drain's fn
// may have panicked while marked), restores the setting, turns a fault in the mapping into
// a truncation error (catch), then ends the operation (leave): one deferred call for all.
func (e *endpoint) endGuarded(old bool, err *error) {
	fence.StoreRelease32(&e.inCallback, 0)
	debug.SetPanicOnFault(old)
	if v := recover(); v != nil || *err != nil {
		defer e.leave() // settle may panic on
		e.settle(v, err, true)
		return
	}
	e.leave()
}

// borrower is what the readers of every kind provide to the operations they share.
type borrower interface {
	enter() error
	leave()
	tryNext() (Record, error)            // borrow the next record; ErrEmpty when there is none
	awaitData(ctx context.Context) error // wait until tryNext may succeed
	release()                            // give back everything borrowed
	reject()                             // count the record just borrowed as rejected
	unborrow()                           // keep the record just borrowed for the next call
	forget()                             // after Close: drop what was borrowed, releasing nothing
	check() error                        // after use: nil if the records borrowed are intact (topics)
	ep() *endpoint
}

// check is nil for the rings whose borrowed records no writer overwrites.
func (r *SPSCReader) check() error { return nil }
func (r *MPMCReader) check() error { return nil }

// maintain runs a reader's expensive check (what its blocked Next runs about every
// livenessInterval, the file's size check included) inside the endpoint's guard, under
// SetPanicOnFault.
func maintain(e *endpoint, check func(expensive bool) error) (err error) {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.leave()
	defer e.catch(debug.SetPanicOnFault(true), &err)
	if err := e.intact(); err != nil {
		return err
	}
	return check(true)
}

// next borrows a record; with a nil ctx it never waits.
func next(b borrower, ctx context.Context) (Record, error) {
	if err := b.enter(); err != nil {
		return Record{}, err
	}
	defer b.leave()
	return nextLocked(b, ctx)
}

func nextLocked(b borrower, ctx context.Context) (Record, error) {
	rec, err := b.tryNext()
	if err != ErrEmpty || ctx == nil {
		return rec, err
	}
	return nextSlow(b, ctx)
}

// nextSlow is nextLocked once the ring was found empty: it waits, and takes the record
// after the wait, under SetPanicOnFault (see fault.go).
func nextSlow(b borrower, ctx context.Context) (rec Record, err error) {
	defer b.ep().catch(debug.SetPanicOnFault(true), &err)
	for {
		if err := b.awaitData(ctx); err != nil {
			return Record{}, err
		}
		rec, err := b.tryNext()
		if err != ErrEmpty {
			return rec, err
		}
	}
}

// read copies the next record into dst and releases it; with a nil ctx it never waits. It
// runs under SetPanicOnFault (see fault.go).
func read(b borrower, ctx context.Context, dst []byte) (n int, typ uint32, err error) {
	if err := b.enter(); err != nil {
		return 0, 0, err
	}
	defer b.ep().endGuarded(debug.SetPanicOnFault(true), &err) // and leave
	rec, err := nextLocked(b, ctx)
	if err != nil {
		return 0, 0, err
	}
	if len(dst) < len(rec.Data) {
		if err := b.check(); err != nil {
			return 0, 0, err // the length came from a record being overwritten
		}
		b.unborrow()
		return 0, 0, fmt.Errorf("%w: record of %d bytes, buffer of %d", ErrShortBuffer, len(rec.Data), len(dst))
	}
	n = copy(dst, rec.Data)
	if err := b.check(); err != nil {
		return 0, 0, err // the copy may be torn: the record counts as missed
	}
	b.release()
	return n, rec.Type, nil
}

// callback runs fn on rec marked as in a callback, so that a Close meanwhile (from fn
// itself, say) need not wait for it. The stores pair with close's loads after its fence:
// either close sees the mark, or the load of closed after fn sees close.
// If fn panics, drain's deferred cleanup clears the mark.
func callback(e *endpoint, fn func(Record) error, rec Record) error {
	fence.StoreRelease32(&e.inCallback, 1)
	err := fn(rec)
	fence.StoreRelease32(&e.inCallback, 0)
	return err
}

// drain waits for a first record, then hands fn every available one up to max, and
// releases them. A record fn rejects (ErrRejected) is counted and passed; the record fn
// fails on otherwise is kept for the next call. It runs under SetPanicOnFault (see
// fault.go), fn included: fn's use of the records is covered too.
func drain(b borrower, ctx context.Context, fn func(Record) error, max int) (n int, err error) {
	if err := b.enter(); err != nil {
		return 0, err
	}
	defer b.ep().endGuarded(debug.SetPanicOnFault(true), &err) // and leave
	seen := 0
	for max <= 0 || seen < max {
		rec, err := b.tryNext()
		if err == ErrEmpty && seen == 0 {
			if ctx == nil {
				return 0, ErrEmpty
			}
			if err := b.awaitData(ctx); err != nil {
				return 0, err
			}
			continue
		}
		if err == ErrEmpty || (err == ErrEndOfStream && seen > 0) {
			break
		}
		if err != nil {
			b.release()
			return n, err
		}
		seen++
		err = callback(b.ep(), fn, rec)
		if b.ep().isClosed() {
			// Closed while fn ran (possibly by fn): touch nothing shared; let go of the
			// records once Close is done.
			b.leave()
			b.ep().afterClose(b.forget)
			return n, ErrClosed
		}
		if err == nil {
			if err := b.check(); err != nil {
				b.release()
				return n, err // fn may have read a torn record: it counts as missed, not in n
			}
		}
		if err != nil {
			if errors.Is(err, ErrRejected) {
				b.reject()
				continue
			}
			b.unborrow()
			b.release()
			return n, err
		}
		n++
	}
	b.release()
	return n, nil
}
