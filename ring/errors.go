package ring

import (
	"errors"
	"io"
	"os"
)

// ErrFull is returned by the Try forms of the writer when the ring has no room.
var ErrFull = errors.New("ring is full")

// ErrEmpty is returned by the Try forms of the reader when no record is available.
var ErrEmpty = errors.New("ring is empty")

// ErrTooLarge is returned when a message is larger than the ring's maximum message size.
var ErrTooLarge = errors.New("message larger than the ring allows")

// ErrClosed is returned once the writer closed the ring and every record has been read, and
// by any method of an endpoint after its own Close. It is os.ErrClosed.
var ErrClosed = os.ErrClosed

// ErrPeerDead is returned when the process on the other side died: to a reader once it has
// drained what was committed and no writer is alive, to a writer that waits for room that
// no live reader will make. A new peer may take the role over.
var ErrPeerDead = errors.New("ring peer died")

// ErrBusy is returned when an exclusive role (the SPSC writer or reader) is held by a live
// process.
var ErrBusy = errors.New("ring role is held by another live process")

// ErrCorrupt is returned when the ring's shared state breaks an invariant a correct peer
// keeps: a position out of range, a record header that does not fit.
var ErrCorrupt = errors.New("ring state is corrupt")

// ErrKind is returned when a segment of one ring kind is opened as the other.
var ErrKind = errors.New("segment is not of this ring kind")

// ErrShortBuffer is returned by Read when dst is smaller than the record; the record stays
// in the ring. It is io.ErrShortBuffer.
var ErrShortBuffer = io.ErrShortBuffer

// ErrNotReserved is returned by Commit when nothing was reserved, and ErrPending by
// operations that need the writer to have no reserved, uncommitted records.
var (
	ErrNotReserved = errors.New("nothing reserved to commit")
	ErrPending     = errors.New("reserved records are not committed yet")
)
