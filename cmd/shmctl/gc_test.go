package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGC(t *testing.T) {
	dir := testDir(t)
	for _, n := range []string{"crashed", "alive", "idle"} {
		_, _, status := shmctl(t, dir, "create", n, "--kind", "spsc", "--size", "64KiB")
		require.Equal(t, 0, status)
	}
	dead := startHolder(t, dir, "crashed")
	dead.Kill()
	_ = dead.Wait(20 * time.Second)
	startHolder(t, dir, "alive")
	tmp := filepath.Join(dir, ".shmq-tmp-lost.99.0000abcd")
	require.NoError(t, os.WriteFile(tmp, make([]byte, 64), 0o600))
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(tmp, old, old))

	stdout, stderr, status := shmctl(t, dir, "gc", "--dry-run")
	require.Equal(t, 0, status, stderr)
	assert.Equal(t, "would remove .shmq-tmp-lost.99.0000abcd (creator died during creation)\n"+
		"would remove crashed (all 1 peers dead)\n", stdout)

	stdout, _, status = shmctl(t, dir, "gc")
	require.Equal(t, 0, status)
	assert.Contains(t, stdout, "removed crashed")
	var left []string
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	assert.ElementsMatch(t, []string{"alive", "idle"}, left)
}
