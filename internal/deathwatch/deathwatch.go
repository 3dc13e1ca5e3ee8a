// Package deathwatch tells a process when another process exits, without polling: a pidfd
// (Linux 5.3+) becomes readable when its process exits, and the Go netpoller waits for
// that with no thread and no timer. Where pidfds are not available, Watch returns
// ErrNotSupported and callers keep polling.
package deathwatch

import "errors"

// ErrNotSupported is returned where a process's exit cannot be watched.
var ErrNotSupported = errors.New("deathwatch: not supported on this system")
