package dlq

import (
	"errors"
	"fmt"

	"github.com/shmq/shmq/shm"
)

// ErrFull is returned by Put when every slot holds an entry.
var ErrFull = errors.New("dead-letter queue is full")

// ErrEmpty is returned by Take when no entry is ready to be taken.
var ErrEmpty = errors.New("dead-letter queue is empty")

// ErrTooLarge is returned by Put for an entry whose origin, error and data do not fit a
// slot (Queue.MaxEntry), or whose origin is longer than MaxOriginLen.
var ErrTooLarge = errors.New("entry larger than a dead-letter slot")

// ErrCorrupt is returned when the segment breaks an invariant a correct peer keeps: a bad
// slot size in the descriptor, a state word no peer writes, a record whose lengths do not
// fit or whose checksum does not match. It wraps shm.ErrCorrupt.
var ErrCorrupt = fmt.Errorf("dead-letter queue: %w", shm.ErrCorrupt)

// ErrVersion is returned by Open for a DLQ format version this package does not read. It
// wraps shm.ErrVersion.
var ErrVersion = fmt.Errorf("dead-letter queue format: %w", shm.ErrVersion)

// ErrKind is returned by Open for a segment that is not a DLQ. It wraps shm.ErrKind.
var ErrKind = fmt.Errorf("not a dead-letter queue: %w", shm.ErrKind)

// ErrClosed is returned by every method after Close. It is shm.ErrClosed (os.ErrClosed).
var ErrClosed = shm.ErrClosed

// ErrReadOnly is returned by Put, Take, Replay and Purge on a Queue from Inspect. It is
// shm.ErrReadOnly.
var ErrReadOnly = shm.ErrReadOnly

// ErrInvalid is returned by Create and OpenOrCreate for a Config out of range.
var ErrInvalid = errors.New("invalid dead-letter queue config")
