package deathwatch

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// Watch calls fn once, on a goroutine of its own, when process pid exits (at once if it
// has already). cancel stops the watch: fn is not called after cancel returns, unless it
// was already running. Errors: ErrNotSupported (kernel without pidfds), or the pid does
// not exist (ESRCH).
//
// A pid names a process only while that process runs: the caller must know, after Watch
// returned, that pid is still the process it means (shm's peer entries say so: an entry
// whose lock is held belongs to the running process with its pid).
func Watch(pid int, fn func()) (cancel func(), err error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		return nil, ErrNotSupported
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, ErrNotSupported
	}
	stopped := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		first := true
		// Read parks in the netpoller until the pidfd is readable (the process exited),
		// or returns an error once the file is closed (cancel).
		err := rc.Read(func(uintptr) bool {
			if first {
				first = false
				return false // wait for readiness
			}
			return true
		})
		select {
		case <-stopped:
			return
		default:
		}
		if err == nil {
			fn()
		}
	}()
	return func() {
		select {
		case <-stopped:
			return
		default:
		}
		close(stopped)
		f.Close()
		<-done
	}, nil
}
