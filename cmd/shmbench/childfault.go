//go:build linux

package main

import (
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/shmq/shmq/shm"
)

// A child's rings live in files another process can truncate under it (issue 11): touching
// a lost page faults (SIGBUS). The ring package turns that into shm.ErrTruncated on its
// slow paths only; a child's hot loop (Reserve, fill, Commit; Next, check, Release) is the
// fast path, and its own checks read the records. So the child runs under
// debug.SetPanicOnFault on its main goroutine, the one that moves the messages (set once:
// nothing per message), and reports a fault in one of its segments as an error naming it.

// childSegments are the segments this child opened, to tell a fault in one of them from
// anything else.
var childSegments struct {
	mu   sync.Mutex
	segs []*shm.Segment
}

// openChildSegment opens a segment for the child and remembers it.
func openChildSegment(dir, name string) (*shm.Segment, error) {
	seg, err := shm.Open(name, shm.Options{Dir: dir})
	if err != nil {
		return nil, err
	}
	childSegments.mu.Lock()
	childSegments.segs = append(childSegments.segs, seg)
	childSegments.mu.Unlock()
	return seg, nil
}

// segmentFault is the error for v, a value recovered from a panic, if it is a memory fault
// in one of the child's segments (an error wrapping shm.ErrTruncated); nil otherwise.
func segmentFault(v any) error {
	childSegments.mu.Lock()
	defer childSegments.mu.Unlock()
	for _, seg := range childSegments.segs {
		if err := seg.Fault(v); err != nil {
			return err
		}
	}
	return nil
}

// runGuardedChild is runChild under debug.SetPanicOnFault: a fault in one of the child's
// segments ends it with an error (reported like any other), anything else panics on.
func runGuardedChild(cfg childConfig) (rep childReport, err error) {
	defer func(old bool) {
		debug.SetPanicOnFault(old)
		if v := recover(); v != nil {
			ferr := segmentFault(v)
			if ferr == nil {
				panic(v)
			}
			err = fmt.Errorf("%s of %s: %w", cfg.Role, cfg.Ring, ferr)
		}
	}(debug.SetPanicOnFault(true))
	return runChild(cfg)
}
