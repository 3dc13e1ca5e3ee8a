package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func TestCreateRoundsUpAndSaysSo(t *testing.T) {
	dir := testDir(t)
	stdout, stderr, status := shmctl(t, dir, "create", "q", "--kind", "mpmc", "--size", "100000", "--slot", "200", "--mode", "0640")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stderr, "size 100000 is not a power of two, rounded up to 128KiB")
	assert.Contains(t, stderr, "slot 200 is not a power of two, rounded up to 256B")
	assert.Contains(t, stdout, "created q (mpmc, 128KiB data, 512 slots of 256B)")

	s, err := shm.Inspect("q", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer s.Close()
	assert.EqualValues(t, 128<<10, s.Descriptor().DataSize)
	spec, err := ring.SpecOf(s.Descriptor())
	require.NoError(t, err)
	assert.EqualValues(t, 256, spec.SlotSize)
	st, err := os.Stat(filepath.Join(dir, "q"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), st.Mode().Perm())
}

func TestCreateFailures(t *testing.T) {
	dir := testDir(t)
	_, _, status := shmctl(t, dir, "create", "dup", "--kind", "spsc", "--size", "64KiB")
	require.Equal(t, 0, status)
	_, stderr, status := shmctl(t, dir, "create", "dup", "--kind", "spsc", "--size", "64KiB")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
	assert.Contains(t, stderr, "shmctl: create dup: file already exists")

	_, stderr, status = shmctl(t, dir, "create", "a/b", "--kind", "spsc", "--size", "64KiB")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
	assert.Contains(t, stderr, "invalid segment name")

	_, stderr, status = shmctl(t, dir, "create", "small", "--kind", "spsc", "--size", "1KiB")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
	assert.Contains(t, stderr, "invalid segment spec")
}

func TestCreateTopic(t *testing.T) {
	dir := testDir(t)
	stdout, stderr, status := shmctl(t, dir, "create", "prices", "--kind", "topic", "--size", "64KiB", "--slot", "100", "--policy", "overwrite")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stderr, "slot 100 is not a power of two, rounded up to 128B")
	assert.Contains(t, stdout, "created prices (topic, 64KiB data, 512 slots of 128B, policy overwrite)")
	stdout, stderr, status = shmctl(t, dir, "create", "events", "--kind", "topic", "--size", "64KiB")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stdout, "created events (topic, 64KiB data, 256 slots of 256B, policy block)", "block and 256B slots by default")

	for name, want := range map[string]ring.Spec{
		"prices": {Kind: ring.Topic, Size: 64 << 10, SlotSize: 128, Policy: ring.Overwrite},
		"events": {Kind: ring.Topic, Size: 64 << 10, SlotSize: 256, Policy: ring.Block},
	} {
		s, err := shm.Inspect(name, shm.Options{Dir: dir})
		require.NoError(t, err)
		spec, err := ring.SpecOf(s.Descriptor())
		s.Close()
		require.NoError(t, err)
		assert.Equal(t, want, spec, name)
	}
	stdout, stderr, status = shmctl(t, dir, "create", "state", "--kind", "topic", "--size", "4KiB", "--slot", "64", "--policy", "latest")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stdout, "64 slots of 64B, policy latest")
}
