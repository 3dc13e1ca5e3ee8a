// Package segfile answers two questions tools ask about segment files, for shmctl and the
// Prometheus collector: is this file a shmq segment at all (whether or not it opens), and
// how many processes, not peer-table entries, have it attached.
package segfile

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// Shmq reports whether err, what shm.Inspect said of segment name in dir, leaves the file
// a shmq segment: one that opened (err nil), or a damaged or unreadable one that begins
// with the shmq magic. A foreign file, a symlink, anything but a regular file, and an empty
// file or one cut inside the magic are not. It only reads the first bytes of a regular
// file it does not follow a link to.
func Shmq(dir, name string, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, shm.ErrNotSegment), errors.Is(err, shm.ErrNotExist):
		return false
	case errors.Is(err, shm.ErrCorrupt), errors.Is(err, shm.ErrVersion), errors.Is(err, shm.ErrKind):
		return true // each is found only after the magic matched
	}
	return HasMagic(filepath.Join(dir, name))
}

// HasMagic reports whether path is a regular file (not a link to one) that begins with the
// shmq magic. Opening never blocks (O_NONBLOCK) and a file that is not regular is refused
// before it is opened, so that looking has no effect on devices or FIFOs.
func HasMagic(path string) bool {
	lst, err := os.Lstat(path)
	if err != nil || !lst.Mode().IsRegular() {
		return false
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !os.SameFile(st, lst) {
		return false // replaced between the two looks
	}
	head := make([]byte, len(layout.Magic))
	if _, err := io.ReadFull(f, head); err != nil {
		return false
	}
	return bytes.Equal(head, []byte(layout.Magic))
}

// Processes counts the processes behind a segment's peer entries: a process that has the
// segment open several times holds several entries. Running processes are told apart by
// pid; dead ones by pid and start time, so that a pid reused after a death is not one
// process. A pid is only as trustworthy as the peers that wrote it.
func Processes(peers []shm.PeerInfo) (alive, dead int) {
	type proc struct {
		pid   int
		start uint64
	}
	live := map[int]bool{}
	gone := map[proc]bool{}
	for _, p := range peers {
		if p.Alive {
			live[p.PID] = true
		} else {
			gone[proc{p.PID, p.StartTicks}] = true
		}
	}
	return len(live), len(gone)
}
