package supervise

import "errors"

// ErrStopped is returned by Scale after Stop has begun.
var ErrStopped = errors.New("supervisor stopped")

// ErrInvalid is returned by New for options out of range and by Scale for a negative
// count; the message says which.
var ErrInvalid = errors.New("invalid supervisor options")

// ErrNilCommand is reported (Event.Err) when the factory returns a nil *exec.Cmd or one
// that was started already: the start counts as a failed one.
var ErrNilCommand = errors.New("worker factory returned no startable command")
