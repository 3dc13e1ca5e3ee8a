package metrics

import (
	"errors"
	"fmt"
	"os"

	"github.com/shmq/shmq/shm"
)

// ErrInvalidDesc is returned by Create and OpenOrCreate when a description breaks the rules
// of Desc or the schema as a whole does (no series, too many, an ID twice, a family whose
// series disagree on type, help or unit). It wraps shm.ErrInvalidSpec.
var ErrInvalidDesc = fmt.Errorf("metrics schema: %w", shm.ErrInvalidSpec)

// ErrCorrupt is returned when what a metrics segment holds is not what a creator writes:
// schema bytes that do not match the checksum in the descriptor or do not decode into a
// valid schema, a value area that does not fit the segment, histogram counts that are
// negative or sum past 2^63-1. It wraps shm.ErrCorrupt.
var ErrCorrupt = fmt.Errorf("metrics segment: %w", shm.ErrCorrupt)

// ErrVersion is returned when a metrics segment's format version is not one this package
// reads. It wraps shm.ErrVersion.
var ErrVersion = fmt.Errorf("metrics format: %w", shm.ErrVersion)

// ErrMismatch is returned by OpenOrCreate and Set.Check when the existing set was created
// with another schema; the message names the first series that differs. It wraps
// shm.ErrMismatch.
var ErrMismatch = fmt.Errorf("metrics schema differs: %w", shm.ErrMismatch)

// ErrNotReady is returned when a set's creator has not finished writing its schema: it
// died while doing so, or is still at it after the wait (ReadyWait, or the context of
// WaitOpen).
var ErrNotReady = errors.New("metrics set is not ready: its creator has not finished writing the schema")

// ErrNoSeries is returned by Set.Counter, Set.Gauge and Set.Histogram when the set has no
// series of that type with that name and labels.
var ErrNoSeries = errors.New("no such series")

// ErrOutOfRange is returned by Histogram.Record (bare, so that recording never allocates)
// for a value the histogram cannot hold: negative, or beyond its highest bucket. The value
// is counted in the histogram's OutOfRange instead.
var ErrOutOfRange = errors.New("value outside the histogram's range")

// ErrReadOnly is returned when a set from Inspect is asked for a recording handle. It is
// shm.ErrReadOnly.
var ErrReadOnly = shm.ErrReadOnly

// ErrClosed is returned by a Set's methods after Close. errors.Is(ErrClosed, os.ErrClosed)
// holds.
var ErrClosed error = closedError{}

type closedError struct{}

func (closedError) Error() string        { return "metrics set is closed" }
func (closedError) Is(target error) bool { return target == os.ErrClosed }
