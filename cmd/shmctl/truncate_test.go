package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWatchSegmentTruncated: a segment truncated by another process while watch reads it
// ends watch with an error and status 1, not a SIGBUS crash.
func TestWatchSegmentTruncated(t *testing.T) {
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "create", "shrinks", "--kind", "spsc", "--size", "64KiB")
	require.Equal(t, 0, status, stderr)
	go func() {
		time.Sleep(150 * time.Millisecond) // watch has mapped it and printed a line or two
		_ = os.Truncate(filepath.Join(dir, "shrinks"), 0)
	}()
	_, stderr, status = shmctl(t, dir, "watch", "shrinks", "--interval", "50ms", "--count", "40")
	assert.Equal(t, 1, status)
	assert.Contains(t, stderr, "segment is truncated")
}
