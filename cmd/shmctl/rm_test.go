package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRmRefusesLivePeer(t *testing.T) {
	dir := testDir(t)
	_, _, status := shmctl(t, dir, "create", "busy", "--kind", "spsc", "--size", "64KiB")
	require.Equal(t, 0, status)
	holder := startHolder(t, dir, "busy")

	_, stderr, status := shmctl(t, dir, "rm", "busy")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
	assert.Contains(t, stderr, "rm busy: 1 live peer(s) attached")
	_, err := os.Stat(filepath.Join(dir, "busy"))
	require.NoError(t, err, "still there")

	// Once the peer is dead, rm goes through without --force.
	holder.Kill()
	_ = holder.Wait(20 * time.Second)
	stdout, stderr, status := shmctl(t, dir, "rm", "busy")
	require.Equal(t, 0, status, stderr)
	assert.Equal(t, "removed busy\n", stdout)
}

func TestRmForce(t *testing.T) {
	dir := testDir(t)
	_, _, status := shmctl(t, dir, "create", "busy", "--kind", "spsc", "--size", "64KiB")
	require.Equal(t, 0, status)
	startHolder(t, dir, "busy")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "foreign"), []byte("x"), 0o600))

	_, stderr, status := shmctl(t, dir, "rm", "foreign")
	assert.Equal(t, 1, status)
	assert.Contains(t, stderr, "not a shmq segment")

	stdout, stderr, status := shmctl(t, dir, "rm", "busy", "foreign", "--force")
	require.Equal(t, 0, status, stderr)
	assert.Equal(t, "removed busy\nremoved foreign\n", stdout)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries)
}

func TestRmSeveralWithFailures(t *testing.T) {
	dir := testDir(t)
	for _, n := range []string{"a", "b"} {
		_, _, status := shmctl(t, dir, "create", n, "--kind", "spsc", "--size", "64KiB")
		require.Equal(t, 0, status)
	}
	stdout, stderr, status := shmctl(t, dir, "rm", "a", "missing", "b", "../etc")
	assert.Equal(t, 1, status)
	assert.Equal(t, "removed a\nremoved b\n", stdout)
	assert.Contains(t, stderr, "shmctl: rm missing: file does not exist")
	assert.Contains(t, stderr, "shmctl: rm ../etc: invalid segment name")
}
