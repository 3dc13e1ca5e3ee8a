//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFlagsRPC(t *testing.T) {
	cfg, err := parseFlags(strings.Fields("--scenarios rpc --transports spsc,shmq,unix,pipe --waits futex,adaptive --callers 1,4,8"), &bytes.Buffer{})
	require.NoError(t, err)
	cases := cfg.cases()
	// shmq (spsc and shmq name it once) x 2 waits x 3 caller counts, unix x 3; pipe has no rpc
	require.Len(t, cases, 2*3+3)
	assert.Equal(t, "rpc shmq/futex 64B 4x1", cases[1].label())
	assert.Equal(t, "rpc unix 64B 8x1", cases[8].label())
	def, err := parseFlags(nil, &bytes.Buffer{})
	require.NoError(t, err)
	assert.NotContains(t, def.Scenarios, rpcScenario, "not in the default run")
	for _, cs := range def.cases() {
		assert.NotEqual(t, shmqTranport, cs.Transport)
	}
	_, err = parseFlags(strings.Fields("--scenarios rpc --callers 0"), &bytes.Buffer{})
	assert.ErrorIs(t, err, errUsage)
	cfg, err = parseFlags(strings.Fields("--scenarios throughput --transports shmq,spsc --waits spin"), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Len(t, cfg.cases(), 1, "shmq stands for the broker in the rpc scenario only")
}

// TestRPCRun: the rpc scenario end to end, every side a process of its own: calls/s,
// round-trip percentiles and both sides' CPU for shmq and unix, 1 and 8 callers; every
// reply its request's echo; the JSON and the summary line.
func TestRPCRun(t *testing.T) {
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	var out, errOut bytes.Buffer
	status := run([]string{"--quick", "--scenarios", "rpc", "--transports", "shmq,unix", "--waits", "adaptive",
		"--callers", "1,8", "--json", jsonPath}, &out, &errOut)
	require.Equal(t, 0, status, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	t.Logf("\n%s", out.String())
	raw, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var rep Report
	require.NoError(t, json.Unmarshal(raw, &rep))
	require.Len(t, rep.Results, 4)
	for i, r := range rep.Results {
		name := r.label()
		assert.Equal(t, rpcScenario, r.Scenario, name)
		assert.Equal(t, []string{"shmq", "shmq", "unix", "unix"}[i], r.Transport, name)
		assert.Equal(t, []int{1, 8}[i%2], r.Producers, "%s: callers", name)
		assert.Positive(t, r.Messages, name)
		assert.Positive(t, r.MsgsPerSec, name)
		require.NotNil(t, r.Latency, name)
		assert.Positive(t, r.Latency.P50, name)
		assert.GreaterOrEqual(t, r.Latency.P99, r.Latency.P50, name)
		assert.Positive(t, r.CPUSeconds.Writer, name)
		assert.Positive(t, r.CPUSeconds.Reader, name)
		assert.Zero(t, r.Corrupt+r.Lost, name)
	}
	assert.Contains(t, out.String(), "rpc shmq/adaptive vs unix, 8 caller(s), 64B:")
}
