//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	if ChildMainForTest() {
		return
	}
	os.Exit(m.Run())
}

// TestRunAllThree: shmq, unix and gRPC in one run, each case in two processes; every
// transport and caller count has a result with calls and latency, and the summary
// compares shmq with the other two.
func TestRunAllThree(t *testing.T) {
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	var out, errOut bytes.Buffer
	status := run([]string{"--duration", "200ms", "--json", jsonPath}, &out, &errOut)
	require.Equal(t, 0, status, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	t.Logf("\n%s", out.String())
	raw, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var runs []Run
	require.NoError(t, json.Unmarshal(raw, &runs))
	require.Len(t, runs, 1)
	require.Len(t, runs[0], 6)
	for i, r := range runs[0] {
		assert.Equal(t, []string{"shmq", "shmq", "unix", "unix", "grpc", "grpc"}[i], r.Transport)
		assert.Equal(t, []int{1, 8}[i%2], r.Callers)
		assert.Positive(t, r.Calls, r.Transport)
		assert.Positive(t, r.P50, r.Transport)
		assert.Zero(t, r.Bad, r.Transport)
	}
	for _, s := range []string{"1 caller(s): shmq/adaptive vs grpc:", "8 caller(s): shmq/adaptive vs unix:"} {
		assert.Contains(t, out.String(), s)
	}
	assert.Equal(t, 2, run([]string{"--transports", "pigeon"}, &out, &errOut))
}
