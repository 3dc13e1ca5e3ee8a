package futex

import (
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Supported reports whether Wait and Wake work on this system.
const Supported = true

// Futex operations without FUTEX_PRIVATE_FLAG: the word may live in a MAP_SHARED mapping
// seen by other processes, and the kernel keys the wait queue by (inode, offset) only when
// the private flag is absent.
const (
	opWait = 0 // FUTEX_WAIT
	opWake = 1 // FUTEX_WAKE
)

// Wait sleeps while *addr == val, until a Wake on the same word, the timeout, or a spurious
// wake-up. A timeout <= 0 means no timeout.
//
// It returns nil when woken and also when the word did not hold val on entry (EAGAIN) or a
// signal interrupted the sleep (EINTR): the caller re-checks its condition either way. It
// returns ErrTimeout when the timeout passed. Safe from any number of goroutines and
// processes; addr must be 4-byte aligned.
func Wait(addr *uint32, val uint32, timeout time.Duration) error {
	var tsp *unix.Timespec
	if timeout > 0 {
		ts := unix.NsecToTimespec(int64(timeout))
		tsp = &ts
	}
	// The pointer is passed to the kernel as an address; addr points into an mmap'd region
	// (never the Go heap in shmq), so it stays valid during the call.
	_, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), opWait,
		uintptr(val), uintptr(unsafe.Pointer(tsp)), 0, 0)
	switch errno {
	case 0, unix.EAGAIN, unix.EINTR:
		return nil
	case unix.ETIMEDOUT:
		return ErrTimeout
	default:
		return fmt.Errorf("futex: wait: %w", errno)
	}
}

// Wake wakes up to n waiters sleeping on addr and returns how many it woke. Safe from any
// number of goroutines and processes; it never blocks.
func Wake(addr *uint32, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	if n > 1<<30 {
		n = 1 << 30
	}
	r, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), opWake,
		uintptr(n), 0, 0, 0)
	if errno != 0 {
		return 0, fmt.Errorf("futex: wake: %w", errno)
	}
	return int(r), nil
}
