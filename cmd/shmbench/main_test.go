//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	if childMain() { // the test binary re-executed as a writer or reader
		return
	}
	os.Exit(m.Run())
}

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := parseFlags(nil, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, allTransports, cfg.Transports)
	assert.Equal(t, allWaits, cfg.Waits)
	assert.Equal(t, allScenarios, cfg.Scenarios)
	assert.Equal(t, []int{64}, cfg.Sizes)
	assert.Equal(t, time.Second, cfg.Duration)
	assert.Equal(t, 10000, cfg.Rate)
	assert.Equal(t, 10*time.Millisecond, cfg.Sleep)
	assert.Equal(t, 1, cfg.Batch)
	assert.Equal(t, "floor", cfg.Transports[0], "the floor comes first, the reference for the rows below it")
	// 4 scenarios x (floor + 2 rings x 4 waits + 3 kernel transports)
	cases := cfg.cases()
	assert.Len(t, cases, 48)
	for _, cs := range cases {
		assert.Equal(t, 1, cs.Batch, "%s", cs.label())
	}
}

func TestParseFlagsBatchAndFloor(t *testing.T) {
	cfg, err := parseFlags(strings.Fields("--transports floor,spsc,unix --waits spin,futex --batch 32 --sizes 64,1MiB"), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, 32, cfg.Batch)
	assert.Equal(t, []string{"floor", "spsc", "unix"}, cfg.Transports)
	cases := cfg.cases()
	require.Len(t, cases, 4*(1+2+1)*2)
	for _, cs := range cases {
		want := 1
		if cs.Scenario == "throughput" {
			want = 32 // --batch is for throughput; the others move one message at a time
		}
		assert.Equal(t, want, cs.Batch, "%s", cs.label())
		if cs.Transport == "floor" {
			assert.Empty(t, cs.Wait, "the floor has no wait strategies to vary")
		}
	}
	assert.Equal(t, "throughput floor 64B batch 32", cases[0].label())
	assert.Equal(t, "throughput spsc/futex 1MiB batch 32", cases[5].label())

	for _, bad := range []string{"--batch 0", "--batch -3", "--batch 65537", "--batch x", "--batch 128 --sizes 1MiB", "--transports floors"} {
		_, err := parseFlags(strings.Fields(bad), &bytes.Buffer{})
		assert.True(t, errors.Is(err, errUsage), "%s: %v", bad, err)
	}
	_, err = parseFlags(strings.Fields("--batch 64 --sizes 1MiB"), &bytes.Buffer{})
	assert.NoError(t, err, "64 x 1MiB is the largest batch of 1MiB messages")
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags(strings.Fields("--transports mpmc,unix --waits futex --sizes 64,4KiB,1MiB --producers 2 --consumers 3 "+
		"--scenarios throughput --duration 2s --rate 500 --sleep 1ms --pin --quick --json - --plot p.svg"), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, []string{"mpmc", "unix"}, cfg.Transports)
	assert.Equal(t, []int{64, 4096, 1 << 20}, cfg.Sizes)
	assert.Equal(t, 150*time.Millisecond, cfg.Duration, "--quick shortens every case")
	assert.True(t, cfg.Pin)
	assert.Equal(t, "-", cfg.JSON)
	cases := cfg.cases()
	require.Len(t, cases, 6) // (mpmc/futex + unix) x 3 sizes
	assert.Equal(t, 2, cases[0].Producers)
	assert.Equal(t, 3, cases[0].Consumers)
	assert.Equal(t, 1, cases[3].Producers, "kernel transports have one writer and one reader")
	assert.Equal(t, "sleep:1ms", cfg.waitFor("sleep").String())

	for _, bad := range []string{
		"--transports shm", "--waits poll", "--scenarios soak", "--sizes 8", "--sizes 64KB", "--sizes 1GiB",
		"--producers 0", "--duration 0s", "--rate -1", "--bogus", "extra", "--codec xml", "--codec fixed --sizes 100",
	} {
		_, err := parseFlags(strings.Fields(bad), &bytes.Buffer{})
		assert.True(t, errors.Is(err, errUsage), "%s: %v", bad, err)
	}
}

func TestUsageExitStatus(t *testing.T) {
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run([]string{"--sizes", "tiny"}, &out, &errOut))
	assert.Contains(t, errOut.String(), "shmbench: ")
	assert.Equal(t, 0, run([]string{"--help"}, &out, &errOut))
}

func TestMessageIntegrity(t *testing.T) {
	p := make([]byte, 64)
	encode(p, 42, 3, 12345, bytes.Repeat([]byte{7}, 64))
	seq, writer, sent, err := decode(p)
	require.NoError(t, err)
	assert.Equal(t, []any{uint64(42), uint32(3), int64(12345)}, []any{seq, writer, sent})
	for _, i := range []int{0, 9, 17, 30, 63} {
		q := append([]byte(nil), p...)
		q[i] ^= 1
		_, _, _, err := decode(q)
		assert.ErrorIs(t, err, errCorrupt, "flipped byte %d", i)
	}
}

// TestQuickRun runs the whole default matrix with --quick, end to end, in real processes,
// and checks the JSON schema and that nothing was lost or corrupt.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every case")
	}
	dir := t.TempDir()
	jsonPath, plotPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.svg")
	var out, errOut bytes.Buffer
	start := time.Now()
	status := run([]string{"--quick", "--json", jsonPath, "--plot", plotPath}, &out, &errOut)
	require.Equal(t, 0, status, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	t.Logf("quick run took %v", time.Since(start))
	assert.Contains(t, out.String(), "spsc/adaptive vs unix (64B): ")
	assert.Contains(t, out.String(), "; vs floor: throughput ")

	raw, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(raw, &doc))
	assert.Equal(t, []string{"host", "results", "version"}, keys(doc))
	assert.EqualValues(t, 1, doc["version"])
	assert.Equal(t, []string{"cpus", "go", "kernel"}, keys(doc["host"].(map[string]any)))
	results := doc["results"].([]any)
	require.Len(t, results, 48)
	for _, r := range results {
		m := r.(map[string]any)
		assert.Equal(t, []string{"batch", "bytes_per_sec", "codec", "consumers", "corrupt", "cpu_ns_per_msg", "cpu_seconds", "idle_cpu_percent",
			"latency_ns", "lost", "messages", "msgs_per_sec", "producers", "scenario", "seconds", "size", "transport", "wait"}, keys(m))
		assert.Equal(t, "raw", m["codec"])
		assert.EqualValues(t, 1, m["batch"])
		assert.EqualValues(t, 0, m["lost"], "%v", m)
		assert.EqualValues(t, 0, m["corrupt"], "%v", m)
		assert.Equal(t, []string{"reader", "writer"}, keys(m["cpu_seconds"].(map[string]any)))
		switch m["scenario"] {
		case "latency", "pingpong":
			require.NotNil(t, m["latency_ns"], "%v", m)
			assert.Equal(t, []string{"max", "p50", "p90", "p99", "p999"}, keys(m["latency_ns"].(map[string]any)))
			assert.Greater(t, m["messages"], 0.0)
		case "throughput":
			assert.Greater(t, m["msgs_per_sec"], 0.0)
			assert.Nil(t, m["latency_ns"])
		case "idle":
			assert.Greater(t, m["idle_cpu_percent"], 0.0)
		}
		if m["transport"] == "pipe" || m["transport"] == "unix" || m["transport"] == "tcp" {
			assert.Equal(t, "", m["wait"])
		}
		if m["transport"] == "floor" {
			assert.Equal(t, "spin", m["wait"])
		}
	}
	svg, err := os.ReadFile(plotPath)
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(svg, []byte("<svg")))
	assert.Contains(t, string(svg), "spsc/futex 64B")
	entries, _ := filepath.Glob("/dev/shm/shmbench-*")
	assert.Empty(t, entries, "every segment directory removed")
}

func keys(m map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	sort.Strings(k)
	return k
}

// TestCodecs runs the rings with each typed codec, end to end, throughput batched (Stage,
// Flush, ReceiveBatch), and checks integrity.
func TestCodecs(t *testing.T) {
	for _, c := range []string{"fixed", "json"} {
		t.Run(c, func(t *testing.T) {
			dir := t.TempDir()
			jsonPath := filepath.Join(dir, "r.json")
			var out, errOut bytes.Buffer
			status := run([]string{"--quick", "--codec", c, "--sizes", "64,1KiB", "--transports", "spsc,mpmc,unix",
				"--waits", "adaptive", "--scenarios", "throughput,pingpong", "--batch", "8", "--json", jsonPath}, &out, &errOut)
			require.Equal(t, 0, status, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
			raw, err := os.ReadFile(jsonPath)
			require.NoError(t, err)
			var rep Report
			require.NoError(t, json.Unmarshal(raw, &rep))
			require.Len(t, rep.Results, 12)
			for _, r := range rep.Results {
				want := c
				if r.Transport == "unix" {
					want = "raw"
				}
				assert.Equal(t, want, r.Codec, "%s", r.name())
				assert.Greater(t, r.Messages, uint64(0), "%s", r.name())
				assert.Zero(t, r.Lost+r.Corrupt, "%s", r.name())
				if r.Scenario == "throughput" {
					assert.Equal(t, 8, r.Batch, "%s", r.name())
				}
			}
			assert.Contains(t, out.String(), "spsc/adaptive+"+c)
		})
	}
}

// TestFloorAndBatch runs the floor beside the rings and the kernel's transports with
// --batch 32, end to end, and checks integrity, the batch field and the floor's summary.
// -short leaves out mpmc and pipe (a child of a -race binary takes a second to start).
func TestFloorAndBatch(t *testing.T) {
	transports := []string{"floor", "spsc", "mpmc", "pipe", "unix"}
	if testing.Short() {
		transports = []string{"floor", "spsc", "unix"}
	}
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "r.json")
	var out, errOut bytes.Buffer
	status := run([]string{"--quick", "--transports", strings.Join(transports, ","), "--waits", "spin", "--batch", "32",
		"--json", jsonPath}, &out, &errOut)
	require.Equal(t, 0, status, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	t.Logf("\n%s", out.String())
	raw, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var rep Report
	require.NoError(t, json.Unmarshal(raw, &rep))
	require.Len(t, rep.Results, 4*len(transports))
	seen := map[string]bool{}
	for _, r := range rep.Results {
		seen[r.Scenario+" "+r.Transport] = true
		assert.Zero(t, r.Lost, "%s %s", r.Scenario, r.name())
		assert.Zero(t, r.Corrupt, "%s %s", r.Scenario, r.name())
		want := 1
		if r.Scenario == "throughput" {
			want = 32
		}
		assert.Equal(t, want, r.Batch, "%s %s", r.Scenario, r.name())
		if r.Transport == "floor" {
			assert.Equal(t, "spin", r.Wait)
			assert.Equal(t, "raw", r.Codec)
		}
		switch r.Scenario {
		case "throughput", "pingpong", "latency":
			assert.Greater(t, r.Messages, uint64(0), "%s %s", r.Scenario, r.name())
		case "idle":
			if r.Transport == "floor" {
				// How much depends on what else runs: a test asserts only that it was measured.
				assert.Greater(t, r.IdleCPUPercent, 0.0, "a spinning reader burns CPU")
			}
		}
	}
	for _, sc := range allScenarios {
		assert.True(t, seen[sc+" floor"], "floor ran %s", sc)
	}
	assert.Contains(t, out.String(), "floor/spin batch 32")
	assert.Contains(t, out.String(), "spsc/spin batch 32")
	assert.Contains(t, out.String(), "floor/spin vs unix (64B): ")
	assert.Regexp(t, `spsc/spin vs unix \(64B\): .*; vs floor: throughput [0-9.]+x, ping-pong p50 [0-9.]+x`, out.String())
	if !testing.Short() {
		assert.Regexp(t, `mpmc/spin vs unix \(64B\): .*; vs floor: throughput [0-9.]+x, ping-pong p50 [0-9.]+x`, out.String())
	}
}

// TestFloorSizes runs the floor and a batched Unix socket at sizes that do not divide the
// ring, and at sizes where a batch is larger than the floor's ring (1MiB: 8 records).
func TestFloorSizes(t *testing.T) {
	if testing.Short() {
		t.Skip("16 cases")
	}
	var out, errOut bytes.Buffer
	status := run([]string{"--quick", "--transports", "floor,unix", "--sizes", "24,100,64KiB,1MiB", "--batch", "10",
		"--scenarios", "throughput,pingpong", "--json", "-"}, &out, &errOut)
	require.Equal(t, 0, status, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	doc := out.Bytes()[bytes.IndexByte(out.Bytes(), '{'):]
	var rep Report
	require.NoError(t, json.Unmarshal(doc, &rep))
	require.Len(t, rep.Results, 2*2*4)
	for _, r := range rep.Results {
		assert.Greater(t, r.Messages, uint64(0), "%s %s %d", r.Scenario, r.name(), r.Size)
		assert.Zero(t, r.Lost+r.Corrupt, "%s %s %d", r.Scenario, r.name(), r.Size)
	}
}
