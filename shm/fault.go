package shm

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// A process that can write the segment's file can also shrink it (ftruncate) under the
// mappings of the others: a page past the file's new end is then gone, and touching it
// faults (SIGBUS), which kills the process unless the faulting goroutine runs with
// debug.SetPanicOnFault. The methods of this package that touch the mapping themselves
// (Open's claim of a peer entry, Peers, SetHold, ClearHold, and Close's release of the peer
// entry) run so, and turn such a fault into ErrTruncated. Layers above that touch the
// mapping do the same with Fault and Intact.

// Intact checks that the file still holds the whole segment the descriptor describes. It
// returns nil, an error wrapping ErrTruncated when the file is shorter now (another process
// truncated it: pages of the mapping are gone and touching them faults), or an error
// wrapping ErrClosed after Close. One fstat; safe from any goroutine.
func (s *Segment) Intact() error {
	st, err := s.file.Stat()
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrClosed, s.name, err)
	}
	if size := st.Size(); size < 0 || uint64(size) < s.desc.FileSize() {
		return fmt.Errorf("%w: %s is %d bytes now, its descriptor says %d (shrunk under the mapping)",
			ErrTruncated, s.name, size, s.desc.FileSize())
	}
	return nil
}

// Fault turns v, a value recovered from a panic, into an error if it is a memory fault (as
// debug.SetPanicOnFault makes one) at an address inside this segment's mapping: an error
// wrapping ErrTruncated, saying how long the file is now. For anything else (another panic,
// a fault elsewhere) it returns nil, and the caller should panic(v) again. Safe from any
// goroutine.
func (s *Segment) Fault(v any) error {
	f, ok := v.(interface{ Addr() uintptr })
	if !ok || !s.contains(f.Addr()) {
		return nil
	}
	if err := s.Intact(); err != nil && !isClosedErr(err) {
		return fmt.Errorf("%w (fault at %#x)", err, f.Addr())
	}
	return fmt.Errorf("%w: %s: fault at %#x inside its mapping", ErrTruncated, s.name, f.Addr())
}

// catchFault is deferred by the methods that touch the mapping, with the goroutine's
// previous SetPanicOnFault setting: it restores it and turns a fault in the mapping into an
// error in *err (other panics go on).
func (s *Segment) catchFault(old bool, err *error) {
	debug.SetPanicOnFault(old)
	if v := recover(); v != nil {
		ferr := s.Fault(v)
		if ferr == nil {
			panic(v)
		}
		*err = ferr
	}
}

func isClosedErr(err error) bool { return err != nil && errors.Is(err, ErrClosed) }
