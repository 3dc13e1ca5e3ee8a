//go:build !linux

package futex

import "time"

// Supported reports whether Wait and Wake work on this system.
const Supported = false

// Wait returns ErrNotSupported on this system; callers poll instead.
func Wait(addr *uint32, val uint32, timeout time.Duration) error { return ErrNotSupported }

// Wake returns ErrNotSupported on this system; callers poll instead.
func Wake(addr *uint32, n int) (int, error) { return 0, ErrNotSupported }

// MaxWaitV is the most words one WaitV call waits on.
const MaxWaitV = 128

// WaitV returns ErrNotSupported off Linux.
func WaitV(words []*uint32, vals []uint32, timeout time.Duration) (int, error) {
	return -1, ErrNotSupported
}
