package ring

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/shmq/shmq/shm"
)

// ErrFull is returned by the Try forms of a writer when the ring has no room.
var ErrFull = errors.New("ring is full")

// ErrEmpty is returned by the Try forms of a reader when no record is available.
var ErrEmpty = errors.New("ring is empty")

// ErrTooLarge is returned when a message is larger than the ring's maximum message size.
var ErrTooLarge = errors.New("message larger than the ring allows")

// ErrEndOfStream is returned to a reader once every writer of the stream has closed and
// every record has been read. It is io.EOF, returned bare, as io.Reader does. It is not
// final: a writer that attaches afterwards starts a new stream on the same ring.
var ErrEndOfStream = io.EOF

// ErrClosed is returned by every method of an endpoint after its own Close (or the Close
// of its segment). errors.Is(ErrClosed, os.ErrClosed) holds, so code written for files and
// connections recognises it; its message says that a ring endpoint was closed.
var ErrClosed error = closedError{}

type closedError struct{}

func (closedError) Error() string        { return "ring endpoint is closed" }
func (closedError) Is(target error) bool { return target == os.ErrClosed }

// ErrPeerDead is returned when a process on the other side died without closing: to a
// reader once it has drained what was committed and every writer that attached is dead,
// to a writer that waits for room while every reader that attached is dead. It is never
// returned for peers that closed cleanly or have not attached yet. It is not final: once a
// new peer attaches, calls succeed again.
var ErrPeerDead = errors.New("ring peer process died")

// ErrBusy is returned when an exclusive role (the SPSC writer or reader) is held by a live
// endpoint, in this process or another. It wraps shm.ErrBusy.
var ErrBusy = fmt.Errorf("ring role taken: %w", shm.ErrBusy)

// ErrCorrupt is returned when the ring's shared state breaks an invariant a correct peer
// keeps: a position out of range, a record header that does not fit, a parameter no ring
// creator writes. It wraps shm.ErrCorrupt.
var ErrCorrupt = fmt.Errorf("ring state: %w", shm.ErrCorrupt)

// ErrKind is returned when a segment is not of the ring kind asked for, or of no ring kind
// this package knows. It wraps shm.ErrKind.
var ErrKind = fmt.Errorf("ring kind: %w", shm.ErrKind)

// ErrVersion is returned when a ring's format version is not one this package reads. It
// wraps shm.ErrVersion.
var ErrVersion = fmt.Errorf("ring format: %w", shm.ErrVersion)

// ErrShortBuffer is returned by Read when dst is smaller than the record; the record stays
// in the ring. It is io.ErrShortBuffer.
var ErrShortBuffer = io.ErrShortBuffer

// ErrNotReserved is returned by Commit when nothing was reserved, and ErrPending by
// operations that need the writer to have no reserved, uncommitted records.
var (
	ErrNotReserved = errors.New("nothing reserved to commit")
	ErrPending     = errors.New("reserved records are not committed yet")
)

// ErrRejected marks a record the consumer refused. A Drain callback that returns an error
// wrapping it (see Reject) has the record released and counted as rejected, and Drain goes
// on with the next record instead of stopping.
var ErrRejected = errors.New("record rejected")

// Reject wraps cause so that Drain releases the record it was returned for, counts it as
// rejected and goes on. errors.Is(Reject(cause), ErrRejected) and errors.Is(Reject(cause),
// cause) both hold.
func Reject(cause error) error {
	if cause == nil {
		return ErrRejected
	}
	return fmt.Errorf("%w: %w", ErrRejected, cause)
}
