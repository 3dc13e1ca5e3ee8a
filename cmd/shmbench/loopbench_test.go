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

func TestParseFlagsLoop(t *testing.T) {
	cfg, err := parseFlags(strings.Fields("--transports loop,spsc --waits futex,adaptive"), &bytes.Buffer{})
	require.NoError(t, err)
	cases := cfg.cases()
	// loop: throughput, latency, idle x 2 waits x 1, 10, 100 rings; spsc: 4 scenarios x 2 waits
	require.Len(t, cases, 3*2*3+4*2)
	var rings []int
	for _, cs := range cases {
		if cs.Transport == loopTransport {
			assert.NotEqual(t, "pingpong", cs.Scenario, "%s", cs.label())
			assert.NotEmpty(t, cs.Wait, "%s", cs.label())
			if cs.Scenario == "throughput" && cs.Wait == "futex" {
				rings = append(rings, cs.Producers)
			}
		}
	}
	assert.Equal(t, []int{1, 10, 100}, rings)
	assert.Equal(t, "throughput loop/futex 64B 100x1", cases[2].label())
	def, err := parseFlags(nil, &bytes.Buffer{})
	require.NoError(t, err)
	assert.NotContains(t, def.Transports, loopTransport, "not in the default run")
}

// TestLoopRun: the loop transport end to end, in real processes: one loop in the reader
// process over 1, 10 and 100 rings; every message arrives, checked per ring.
func TestLoopRun(t *testing.T) {
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "r.json")
	var out, errOut bytes.Buffer
	status := run([]string{"--quick", "--transports", "loop", "--waits", "futex", "--sizes", "100",
		"--scenarios", "throughput,latency,idle", "--json", jsonPath}, &out, &errOut)
	require.Equal(t, 0, status, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	t.Logf("\n%s", out.String())
	raw, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var rep Report
	require.NoError(t, json.Unmarshal(raw, &rep))
	require.Len(t, rep.Results, 9)
	for i, r := range rep.Results {
		name := r.Scenario + " " + r.label()
		assert.Equal(t, loopTransport, r.Transport, name)
		assert.Equal(t, []int{1, 10, 100}[i%3], r.Producers, "%s: rings", name)
		assert.Zero(t, r.Lost+r.Corrupt, name)
		switch r.Scenario {
		case "throughput", "latency":
			assert.Positive(t, r.Messages, name)
			assert.Positive(t, r.MsgsPerSec, name)
			if r.Scenario == "latency" {
				require.NotNil(t, r.Latency, name)
				assert.Positive(t, r.Latency.P50, name)
			}
		case "idle":
			assert.Zero(t, r.Messages, name)
		}
	}
}
