package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// writeRecords creates an spsc segment holding the given records, and returns it open.
func writeRecords(t *testing.T, dir, name string, kind string, payloads ...string) *shm.Segment {
	t.Helper()
	args := []string{"create", name, "--kind", kind, "--size", "64KiB"}
	_, stderr, status := shmctl(t, dir, args...)
	require.Equal(t, 0, status, stderr)
	seg, err := shm.Open(name, shm.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { seg.Close() })
	type writer interface {
		TryWrite(uint32, []byte) error
		Close() error
	}
	var w writer
	if kind == "spsc" {
		w, err = ring.NewSPSCWriter(seg, ring.Options{})
	} else {
		w, err = ring.NewMPMCWriter(seg, ring.Options{})
	}
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	for i, p := range payloads {
		require.NoError(t, w.TryWrite(uint32(100+i), []byte(p)))
	}
	return seg
}

func TestPeekDoesNotConsume(t *testing.T) {
	for _, kind := range []string{"spsc", "mpmc"} {
		t.Run(kind, func(t *testing.T) {
			dir := testDir(t)
			writeRecords(t, dir, "q", kind, "hello world", "\x00\x01\x02binary", "third")
			before, err := os.ReadFile(filepath.Join(dir, "q"))
			require.NoError(t, err)

			stdout, stderr, status := shmctl(t, dir, "peek", "q", "-n", "2")
			require.Equal(t, 0, status, stderr)
			assert.Regexp(t, `100\s+11\s+"hello world"`, stdout)
			assert.Regexp(t, `101\s+9\s+00 01 02 62 69 6e 61 72 79`, stdout)
			assert.NotContains(t, stdout, "third")

			stdout, _, status = shmctl(t, dir, "peek", "q", "--json", "--preview", "3")
			require.Equal(t, 0, status)
			var recs []map[string]any
			require.NoError(t, json.Unmarshal([]byte(stdout), &recs))
			require.Len(t, recs, 3)
			assert.Equal(t, []string{"data", "length", "position", "type"}, keys(recs[0]))
			assert.EqualValues(t, 11, recs[0]["length"])
			assert.Equal(t, "aGVs", recs[0]["data"], "base64 of the 3-byte preview")

			after, err := os.ReadFile(filepath.Join(dir, "q"))
			require.NoError(t, err)
			assert.Equal(t, before, after, "peek changed nothing")
		})
	}
}

func TestStatShowsRing(t *testing.T) {
	dir := testDir(t)
	writeRecords(t, dir, "q", "spsc", "a", "bb", "ccc")
	stdout, stderr, status := shmctl(t, dir, "stat", "q")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stdout, "written     3 messages, 6B")
	assert.Contains(t, stdout, "read        0 messages")
	assert.Contains(t, stdout, "fill        48 of 65536 bytes")
	assert.Contains(t, stdout, "writer      attached")

	stdout, _, status = shmctl(t, dir, "stat", "q", "--json")
	require.Equal(t, 0, status)
	var r statReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &r))
	assert.EqualValues(t, 3, r.Ring.Writers.Messages)
	assert.EqualValues(t, 48, r.Ring.Used)
}

func TestWatch(t *testing.T) {
	dir := testDir(t)
	writeRecords(t, dir, "q", "spsc", "x")
	stdout, stderr, status := shmctl(t, dir, "watch", "q", "--interval", "20ms", "--count", "3")
	require.Equal(t, 0, status, stderr)
	lines := splitLines(stdout)
	require.Len(t, lines, 4, stdout)
	assert.Contains(t, lines[0], "WRITE msg/s")
	assert.Contains(t, lines[3], "attached")

	_, stderr, status = shmctl(t, dir, "watch", "missing", "--count", "1")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
}

func splitLines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }
