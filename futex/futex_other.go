//go:build !linux

package futex

import "time"

// Supported reports whether Wait and Wake work on this system.
const Supported = false

// Wait returns ErrNotSupported on this system; callers poll instead.
func Wait(addr *uint32, val uint32, timeout time.Duration) error { return ErrNotSupported }

// Wake returns ErrNotSupported on this system; callers poll instead.
func Wake(addr *uint32, n int) (int, error) { return 0, ErrNotSupported }
