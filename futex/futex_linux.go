package futex

import (
	"fmt"
	"runtime"
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

// futexWaitv is one entry of futex_waitv(2) (struct futex_waitv).
type futexWaitv struct {
	val      uint64
	uaddr    uint64
	flags    uint32
	reserved uint32
}

// futex_waitv flags: a 32-bit word, and no FUTEX2_PRIVATE, so that Wake (a shared
// FUTEX_WAKE) reaches the sleeper whether the word is in a shared mapping or in Go memory.
const futex2SizeU32 = 0x02

// MaxWaitV is the most words one WaitV call waits on (the kernel's FUTEX_WAITV_MAX).
const MaxWaitV = 128

// WaitV sleeps until a Wake on any of the words, each of which must hold its value in vals
// on entry, or until the timeout (none if <= 0): Wait on several words at once (futex_waitv,
// Linux 5.16 and later). A word may be in a shared mapping or in this process's memory.
//
// It returns the index of the word that was woken; -1 with a nil error when a word did not
// hold its value on entry or a signal interrupted the sleep (re-check, as with Wait);
// ErrTimeout; ErrNotSupported on kernels without futex_waitv; an error for more than
// MaxWaitV words or lengths that differ. The words must stay mapped during the call.
func WaitV(words []*uint32, vals []uint32, timeout time.Duration) (int, error) {
	n := len(words)
	if n == 0 || n > MaxWaitV || len(vals) != n {
		return -1, fmt.Errorf("futex: waitv of %d words, %d values: want 1 to %d of each", n, len(vals), MaxWaitV)
	}
	var entries [MaxWaitV]futexWaitv
	for i, w := range words {
		entries[i] = futexWaitv{val: uint64(vals[i]), uaddr: uint64(uintptr(unsafe.Pointer(w))), flags: futex2SizeU32}
	}
	var tsp *unix.Timespec
	if timeout > 0 {
		// futex_waitv takes an absolute CLOCK_MONOTONIC deadline.
		var now unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
			return -1, fmt.Errorf("futex: waitv: %w", err)
		}
		ts := unix.NsecToTimespec(now.Nano() + int64(timeout))
		tsp = &ts
	}
	r, _, errno := unix.Syscall6(unix.SYS_FUTEX_WAITV, uintptr(unsafe.Pointer(&entries[0])), uintptr(n), 0,
		uintptr(unsafe.Pointer(tsp)), uintptr(unix.CLOCK_MONOTONIC), 0)
	runtime.KeepAlive(words) // Go-memory words stay reachable until the kernel is done
	switch errno {
	case 0:
		return int(r), nil
	case unix.EAGAIN, unix.EINTR:
		return -1, nil
	case unix.ETIMEDOUT:
		return -1, ErrTimeout
	case unix.ENOSYS:
		return -1, ErrNotSupported
	default:
		return -1, fmt.Errorf("futex: waitv: %w", errno)
	}
}
