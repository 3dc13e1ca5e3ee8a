package futex

import "errors"

// ErrTimeout is returned by Wait when its timeout passed without a wake-up.
var ErrTimeout = errors.New("futex: wait timed out")

// ErrNotSupported is returned by Wait and Wake on systems without futexes.
var ErrNotSupported = errors.New("futex: not supported on this system")
