package shm

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// fileStat is what validation needs from fstat.
type fileStat struct {
	mode    fs.FileMode
	regular bool
	typ     string // "regular file", "directory", "FIFO", ...
	uid     int
	gid     int
	nlink   uint64
	size    int64
	dev     uint64
	ino     uint64
	mtime   time.Time
}

func statFromUnix(st *unix.Stat_t) fileStat {
	return fileStat{
		mode:    fs.FileMode(st.Mode & 0o7777),
		regular: st.Mode&unix.S_IFMT == unix.S_IFREG,
		typ:     fileTypes[st.Mode&unix.S_IFMT],
		uid:     int(st.Uid), gid: int(st.Gid),
		nlink: uint64(st.Nlink), size: st.Size,
		dev: uint64(st.Dev), ino: uint64(st.Ino),
		mtime: time.Unix(st.Mtim.Unix()),
	}
}

var fileTypes = map[uint32]string{
	unix.S_IFREG: "regular file", unix.S_IFDIR: "directory", unix.S_IFIFO: "FIFO",
	unix.S_IFLNK: "symlink", unix.S_IFSOCK: "socket", unix.S_IFCHR: "character device",
	unix.S_IFBLK: "block device",
}

func openDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return fd, nil
}

// lstatAt stats name in dirfd without following a symlink.
func lstatAt(dirfd int, name string) (fileStat, bool, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fileStat{}, false, mapErrno(err)
	}
	fst := statFromUnix(&st)
	return fst, st.Mode&unix.S_IFMT == unix.S_IFLNK, nil
}

func fstat(fd int) (fileStat, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileStat{}, err
	}
	return statFromUnix(&st), nil
}

// openAt opens an existing name in dirfd, never following a symlink and never blocking
// (a FIFO planted under a segment name must not hang the opener).
func openAt(dirfd int, name string, writable bool) (int, error) {
	flags := unix.O_RDONLY
	if writable {
		flags = unix.O_RDWR
	}
	fd, err := unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, mapErrno(err)
	}
	return fd, nil
}

// createExclusive creates name in dirfd, failing if anything has that name.
func createExclusive(dirfd int, name string, mode fs.FileMode) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, mapErrno(err)
	}
	// The umask applied to O_CREAT's mode; fchmod gives exactly the mode asked for.
	if err := unix.Fchmod(fd, uint32(mode.Perm())); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// allocate reserves size bytes now, so that a full tmpfs fails here with ENOSPC instead of
// killing a writer with SIGBUS later. Filesystems without fallocate fall back to ftruncate.
func allocate(fd int, size int64) error {
	err := unix.Fallocate(fd, 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = unix.Ftruncate(fd, size)
	}
	return err
}

func renameNoReplace(dirfd int, from, to string) error {
	return mapErrno(unix.Renameat2(dirfd, from, dirfd, to, unix.RENAME_NOREPLACE))
}

func unlinkAt(dirfd int, name string) error { return mapErrno(unix.Unlinkat(dirfd, name, 0)) }

func closeFD(fd int) { _ = unix.Close(fd) }

func readDirNames(dirfd int) ([]string, error) {
	// Dup so that os.File's Close does not close the caller's descriptor.
	nfd, err := unix.Dup(dirfd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(nfd), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}

// lockByte takes an open-file-description write lock on byte off without waiting. It
// returns false if another open file description holds a conflicting lock. OFD locks
// belong to the open file description, not the process: two opens in one process conflict,
// and the kernel releases them when the last descriptor closes, including at process death.
func lockByte(fd int, off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return false, nil
	}
	return err == nil, err
}

func unlockByte(fd int, off int64) error {
	lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: off, Len: 1}
	return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
}

// byteLocked reports whether an open file description other than fd's holds a lock on
// byte off. It changes nothing and works on a read-only descriptor.
func byteLocked(fd int, off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		return false, err
	}
	return lk.Type != unix.F_UNLCK, nil
}

// processStartTicks returns the start time of pid in clock ticks since boot (field 22 of
// /proc/PID/stat), which together with the pid names one process even across pid reuse.
func processStartTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces or ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// mapErrno turns the errnos that mean "missing", "exists" and "symlink" into the fs
// sentinels and ErrUnsafe, so callers can test them with errors.Is.
func mapErrno(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w (%w)", ErrNotExist, err)
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%w (%w)", ErrExist, err)
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("%w: is a symlink", ErrUnsafe)
	case errors.Is(err, unix.EISDIR):
		return fmt.Errorf("%w: is a directory", ErrUnsafe)
	}
	return err
}

const supported = true
