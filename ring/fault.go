package ring

import (
	"errors"
	"runtime/debug"

	"github.com/shmq/shmq/shm"
)

// Truncation. Another process can shrink the segment's file (ftruncate) under the mapping:
// the pages past the file's new end are gone, and touching one faults (SIGBUS), which
// kills the process unless the goroutine runs with debug.SetPanicOnFault, which turns the
// fault into a panic that a deferred recover can turn into an error. The setting is per
// goroutine and costs a call to set and one to restore, a few ns with the recover: +10-21%
// CPU time for a Read of a 64-byte record (BenchmarkHotSPSCRead64 against the build
// without it), too much for the calls that move one record in 50 to 60 ns. So it is paid
// where a call already pays more:
//
//   - the views (ReadStats, Peek, ...) run under it (viewFaults);
//   - a topic publisher's wait for room (Block) runs under it;
//   - a blocking call runs its slow path under it: from the moment Reserve, ReserveBatch
//     or Write find no room, or Next finds nothing, until it returns (the wait, its
//     liveness checks and the record taken after it); and every livenessInterval a waiter
//     checks the file's size (Segment.Intact), so that a truncation that leaves the words
//     it polls in place is found too;
//   - the copying reads, Read and Drain (which also covers the callback's use of the
//     records), run under it whole: once per call, so once per batch for Drain;
//   - Close, Arm, Disarm, Maintain and the constructors, and the other goroutines that
//     touch the mapping for an endpoint (a context's wake-up, a death watch's), as well as
//     package shm's own accesses (peer table, peer entry release).
//
// A fault there (or a short file found by the size check) breaks the endpoint: the call
// returns an error wrapping shm.ErrTruncated, and so does every later call, at once and
// without touching the mapping (enter), except Close, which still detaches what it can.
// The fast paths of the single-record calls (TryReserve, TryWrite, Commit, Abort, TryNext,
// Release, Reject, Ready, and Reserve, Write and Next when they need not wait) are not
// guarded: a truncation that lands while one runs still kills the process (see the
// package's Caveats).

// Bits of endpoint.stop.
const (
	stopClosed = 1 // Close began
	stopBroken = 2 // the segment was found truncated: brokenErr says how
)

// catch is deferred by the guarded parts of an endpoint's own calls, with the goroutine's
// previous SetPanicOnFault setting (defer e.catch(debug.SetPanicOnFault(true), &err)): it
// restores the setting, and turns a fault inside the segment's mapping into a truncation
// error in *err that breaks the endpoint. Other panics go on. An error wrapping
// shm.ErrTruncated already in *err (the size check's) breaks it too.
func (e *endpoint) catch(old bool, err *error) {
	debug.SetPanicOnFault(old)
	if v := recover(); v != nil || *err != nil {
		e.settle(v, err, true)
	}
}

// catchQuiet is catch for code that may run on another goroutine than the endpoint's
// (Close): it turns the fault into *err and breaks nothing.
func (e *endpoint) catchQuiet(old bool, err *error) {
	debug.SetPanicOnFault(old)
	e.settle(recover(), err, false)
}

// settle is the end of catch: v is what recover returned. own says the endpoint's own
// goroutine runs it, which may break the endpoint.
func (e *endpoint) settle(v any, err *error, own bool) {
	if v != nil {
		ferr := e.seg.Fault(v)
		if ferr == nil {
			panic(v)
		}
		*err = ferr
	}
	if own && *err != nil && e.stop.Load()&stopBroken == 0 && isTruncated(*err) {
		e.breakWith(*err)
	}
}

// breakWith marks the endpoint broken by a truncation; only the endpoint's own goroutine
// calls it (the error is written before the bit that publishes it).
func (e *endpoint) breakWith(err error) {
	e.brokenErr = err
	e.stop.Or(stopBroken)
}

// intact is the waiter's size check (every livenessInterval): an error wrapping
// shm.ErrTruncated when the file is shorter than the segment.
func (e *endpoint) intact() error {
	if err := e.seg.Intact(); isTruncated(err) {
		return err
	}
	return nil
}

func isTruncated(err error) bool { return err != nil && errors.Is(err, shm.ErrTruncated) }

// wakeAllGuarded is event.wakeAll for goroutines other than the endpoint's (a context's
// wake-up, a death watch's callback): the segment may have been truncated under them, and
// then there is nobody to wake through it (the sleeper finds out at its timeout).
func (e event) wakeAllGuarded() {
	defer func(old bool) {
		debug.SetPanicOnFault(old)
		if v := recover(); v != nil {
			if _, fault := v.(interface{ Addr() uintptr }); !fault {
				panic(v)
			}
		}
	}(debug.SetPanicOnFault(true))
	e.wakeAll()
}

// The views of a segment (ReadStats, ReadTopicStats, Peek, PeekTopic, PeerEndpoints) run rarely: they run
// under SetPanicOnFault whole, and recover a fault as shm.ErrTruncated.

// viewFaults starts a guarded view: it returns the function to defer, which restores the
// goroutine's setting and turns a fault in the mapping into an error wrapping
// shm.ErrTruncated in *err (other panics go on).
func viewFaults(seg *shm.Segment, err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if v := recover(); v != nil {
			ferr := seg.Fault(v)
			if ferr == nil {
				panic(v)
			}
			*err = ferr
		}
	}
}
