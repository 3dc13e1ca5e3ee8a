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
	if os.Getenv("SHMQ_RACE") != "" {
		// .ci/run's race-detector run: a fault inside the race runtime's own accesses
		// cannot become a panic, so truncation is tested in the run without -race.
		t.Skip("truncation is tested without the race detector")
	}
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

// TestViewsOfATruncatedSegment: stat, peek and ls of a segment whose file was cut (to half:
// the header is there, the data region is not) say so, with status 1 for stat and peek,
// and never fault.
func TestViewsOfATruncatedSegment(t *testing.T) {
	if os.Getenv("SHMQ_RACE") != "" {
		// .ci/run's race-detector run: a fault inside the race runtime's own accesses
		// cannot become a panic, so truncation is tested in the run without -race.
		t.Skip("truncation is tested without the race detector")
	}
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "create", "half", "--kind", "spsc", "--size", "64KiB")
	require.Equal(t, 0, status, stderr)
	path := filepath.Join(dir, "half")
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(path, st.Size()/2))
	for _, cmd := range []string{"stat", "peek"} {
		_, stderr, status = shmctl(t, dir, cmd, "half")
		assert.Equal(t, 1, status, cmd)
		assert.Contains(t, stderr, "segment is truncated", cmd)
		oneLine(t, stderr)
	}
	stdout, stderr, status := shmctl(t, dir, "ls")
	assert.Contains(t, stdout+stderr, "truncated", "ls names the problem")
	t.Logf("ls: status %d\n%s%s", status, stdout, stderr)
}
