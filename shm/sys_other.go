//go:build !linux

package shm

import (
	"io/fs"
	"time"
)

// Segments need OFD locks, fallocate and renameat2: Linux only. Everything here returns
// ErrNotSupported so that the package builds on other systems.

type fileStat struct {
	mode    fs.FileMode
	regular bool
	typ     string
	uid     int
	gid     int
	nlink   uint64
	size    int64
	dev     uint64
	ino     uint64
	mtime   time.Time
}

func openDir(string) (int, error)                           { return -1, ErrNotSupported }
func lstatAt(int, string) (fileStat, bool, error)           { return fileStat{}, false, ErrNotSupported }
func fstat(int) (fileStat, error)                           { return fileStat{}, ErrNotSupported }
func openAt(int, string, bool) (int, error)                 { return -1, ErrNotSupported }
func createExclusive(int, string, fs.FileMode) (int, error) { return -1, ErrNotSupported }
func allocate(int, int64) error                             { return ErrNotSupported }
func renameNoReplace(int, string, string) error             { return ErrNotSupported }
func unlinkAt(int, string) error                            { return ErrNotSupported }
func closeFD(int)                                           {}
func readDirNames(int) ([]string, error)                    { return nil, ErrNotSupported }
func lockByte(int, int64) (bool, error)                     { return false, ErrNotSupported }
func unlockByte(int, int64) error                           { return ErrNotSupported }
func byteLocked(int, int64) (bool, error)                   { return false, ErrNotSupported }
func processStartTicks(int) (uint64, error)                 { return 0, ErrNotSupported }

const supported = false
