package shm

import (
	"fmt"
	"os"
)

// MaxNameLen is the longest segment name.
const MaxNameLen = 200

// DefaultDir is where segments live unless Options.Dir or the SHMQ_DIR environment variable
// says otherwise.
const DefaultDir = "/dev/shm"

// tempPrefix starts the name of a segment under construction. Valid segment names never
// start with a dot, so a temporary can never be mistaken for, or collide with, a segment.
const tempPrefix = ".shmq-tmp-"

// ValidateName returns nil if name is a valid segment name: 1 to MaxNameLen characters from
// [A-Za-z0-9._-], not starting with a dot. Otherwise it returns an error wrapping
// ErrInvalidName that says what is wrong.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidName, len(name), MaxNameLen)
	}
	if name[0] == '.' {
		return fmt.Errorf("%w: %q starts with a dot", ErrInvalidName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("%w: %q has %q at byte %d (allowed: A-Z a-z 0-9 . _ -)", ErrInvalidName, name, c, i)
		}
	}
	return nil
}

// Options locates segments and says whom to trust. The zero value means: the directory from
// SHMQ_DIR or /dev/shm, mode 0600 for new segments, only files owned by the caller's
// effective user, and no removal on Close.
type Options struct {
	// Dir is the directory holding the segments.
	Dir string
	// Mode is the permission of a new segment (Create only); 0 means 0600. The process
	// umask does not apply.
	Mode os.FileMode
	// TrustedOwners are user ids, besides the caller's effective uid, whose segments Open
	// and Inspect accept (for segments shared between users through group permissions).
	TrustedOwners []int
	// Kind, when not zero, makes Open and Inspect fail with ErrKind on a segment of
	// another kind.
	Kind Kind
	// RemoveOnClose makes Close remove the segment's name, if the name still refers to
	// this handle's file (see Segment.Remove). Nobody removes a segment implicitly: the
	// process that should (usually its creator) says so here or calls Segment.Remove.
	RemoveOnClose bool
}

// ResolvedDir returns the directory that o selects: o.Dir, else $SHMQ_DIR, else DefaultDir.
func (o Options) ResolvedDir() string {
	if o.Dir != "" {
		return o.Dir
	}
	if d := os.Getenv("SHMQ_DIR"); d != "" {
		return d
	}
	return DefaultDir
}
