package shm

import (
	"errors"
	"io/fs"
	"os"
)

// ErrInvalidName is returned when a segment name is not 1 to 200 characters of
// [A-Za-z0-9._-] or starts with a dot.
var ErrInvalidName = errors.New("invalid segment name")

// ErrInvalidSpec is returned by Create and OpenOrCreate when the requested sizes or kind
// cannot be laid out, and by ParseKind for a name it does not know.
var ErrInvalidSpec = errors.New("invalid segment spec")

// ErrExist is returned by Create when a file of that name already exists. It is fs.ErrExist.
var ErrExist = fs.ErrExist

// ErrNotExist is returned when there is no file of that name. It is fs.ErrNotExist.
var ErrNotExist = fs.ErrNotExist

// ErrUnsafe is returned when the file is not one shmq may trust: a symlink, not a regular
// file, owned by another user than the caller (or the trusted owners it named), or with more
// than one hard link.
var ErrUnsafe = errors.New("unsafe segment file")

// ErrTruncated is returned when the file is shorter than its header or than the size its
// descriptor states.
var ErrTruncated = errors.New("segment is truncated")

// ErrNotSegment is returned when the file does not begin with the shmq magic.
var ErrNotSegment = errors.New("not a shmq segment")

// ErrVersion is returned when the segment has a major layout version this code does not know.
var ErrVersion = errors.New("unsupported segment layout version")

// ErrCorrupt is returned when the descriptor's checksum does not match, or when a
// checksummed descriptor states values that cannot be a valid layout.
var ErrCorrupt = errors.New("segment is corrupt")

// ErrKind is returned when the segment is of another kind than the caller asked for
// (Options.Kind), or when its descriptor states kind 0.
var ErrKind = errors.New("wrong segment kind")

// ErrBusy is returned when an exclusive role is already held by a live process.
var ErrBusy = errors.New("role is held by another live peer")

// ErrPeerTableFull is returned by Open when every peer entry belongs to a live peer or to a
// dead one whose hold flag is set (see Peer.SetHold).
var ErrPeerTableFull = errors.New("peer table is full")

// ErrReadOnly is returned when a segment obtained with Inspect is asked to change.
var ErrReadOnly = errors.New("segment is open read-only")

// ErrMismatch is returned by OpenOrCreate when the existing segment's kind, data size or
// parameters differ from the spec asked for. The message names both values.
var ErrMismatch = errors.New("segment exists with another spec")

// ErrBorrowed is returned by Close when pins (records borrowed by a ring reader) are still
// held after CloseWait. Close has done everything else; the last Unpin unmaps.
var ErrBorrowed = errors.New("records still borrowed: the mapping is kept until they are released")

// ErrClosed is returned by methods of a closed Segment. It is os.ErrClosed.
var ErrClosed = os.ErrClosed

// ErrNotSupported is returned on systems where shmq segments are not available (anything
// but little-endian Linux).
var ErrNotSupported = errors.New("shm: not supported on this system")
