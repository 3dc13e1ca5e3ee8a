// Package futex waits and wakes on a 32-bit word in memory shared between processes.
//
// Wait and Wake use the shared (not FUTEX_PRIVATE) operations of the Linux futex system
// call, so a waiter in one process is woken by a Wake in another, as long as both have the
// word mapped from the same file. On other systems every call returns ErrNotSupported and
// callers fall back to polling.
//
// A futex is only a sleeping place, never a lock: Wait may return without a Wake (the word
// had already changed, a signal arrived, or the kernel chose to), so callers always re-check
// their condition in a loop. Each goroutine blocked in Wait holds an OS thread for as long as
// it sleeps.
package futex
