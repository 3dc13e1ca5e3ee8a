//go:build linux

package shm_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// TestTruncatedUnderTheMapping: once another process truncates an open segment's file, the
// methods that touch the mapping themselves report shm.ErrTruncated instead of dying of
// SIGBUS, Intact says so, and Close still gives everything up.
func TestTruncatedUnderTheMapping(t *testing.T) {
	if os.Getenv("SHMQ_RACE") != "" {
		// .ci/run's race-detector run: a fault inside the race runtime's own accesses
		// cannot become a panic, so truncation is tested in the run without -race.
		t.Skip("truncation is tested without the race detector")
	}
	dir := testDir(t)
	seg := mustCreate(t, dir, "cut", spec64K)
	other, err := shm.Open("cut", shm.Options{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, seg.Intact())
	peers, err := seg.Peers()
	require.NoError(t, err)
	require.Len(t, peers, 2)

	require.NoError(t, os.Truncate(filepath.Join(dir, "cut"), 0))
	assert.ErrorIs(t, seg.Intact(), shm.ErrTruncated)
	_, err = seg.Peers()
	assert.ErrorIs(t, err, shm.ErrTruncated)
	seg.Peer().SetHold(true) // nothing left to set: no fault, no effect
	n, err := seg.LivePeers()
	assert.ErrorIs(t, err, shm.ErrTruncated)
	assert.Zero(t, n)

	// Fault tells a fault in the mapping from anything else.
	var v any
	func() {
		defer func(old bool) { debug.SetPanicOnFault(old); v = recover() }(debug.SetPanicOnFault(true))
		sink = seg.Header()[layout.DescriptorSize] // the first page is gone
	}()
	require.NotNil(t, v, "reading a truncated page faults")
	assert.ErrorIs(t, seg.Fault(v), shm.ErrTruncated)
	assert.NoError(t, seg.Fault(errors.New("not a fault")))

	err = other.Close() // releases its peer entry: a write to the lost page
	assert.ErrorIs(t, err, shm.ErrTruncated)
	assert.ErrorIs(t, seg.Close(), shm.ErrTruncated)
	assert.ErrorIs(t, seg.Intact(), shm.ErrClosed)
}

var sink byte

// TestTruncatedToHalf: a truncation that leaves the header in place is still found by
// Intact; the peer table works on.
func TestTruncatedToHalf(t *testing.T) {
	if os.Getenv("SHMQ_RACE") != "" {
		// .ci/run's race-detector run: a fault inside the race runtime's own accesses
		// cannot become a panic, so truncation is tested in the run without -race.
		t.Skip("truncation is tested without the race detector")
	}
	dir := testDir(t)
	seg := mustCreate(t, dir, "half", spec64K)
	require.NoError(t, os.Truncate(filepath.Join(dir, "half"), int64(seg.Descriptor().FileSize()/2)))
	err := seg.Intact()
	assert.ErrorIs(t, err, shm.ErrTruncated)
	assert.Contains(t, err.Error(), "descriptor says")
	_, err = seg.Peers()
	assert.NoError(t, err)
	assert.NoError(t, seg.Close())
}
