//go:build !linux

package deathwatch

// Watch returns ErrNotSupported off Linux.
func Watch(pid int, fn func()) (cancel func(), err error) { return nil, ErrNotSupported }
