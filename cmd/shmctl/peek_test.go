package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
			assert.Regexp(t, `100\s+11\s+0000  68 65 6c 6c 6f 20 77 6f  72 6c 64 {17}\|hello world\|\n`, stdout)
			assert.Regexp(t, `101\s+9\s+0000  00 01 02 62 69 6e 61 72  79 {23}\|\.\.\.binary\|\n`, stdout)
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

// TestPeekHexdump: long records dump 16 bytes a line, as hexdump -C, under the first, and
// say how much the preview left out.
func TestPeekHexdump(t *testing.T) {
	dir := testDir(t)
	writeRecords(t, dir, "q", "spsc", "The quick brown fox jumps\x00\xff over the lazy dog", "")
	stdout, stderr, status := shmctl(t, dir, "peek", "q", "--preview", "40")
	require.Equal(t, 0, status, stderr)
	want := "POSITION  TYPE  LENGTH  DATA\n" +
		"0         100   45      0000  54 68 65 20 71 75 69 63  6b 20 62 72 6f 77 6e 20  |The quick brown |\n" +
		"                        0010  66 6f 78 20 6a 75 6d 70  73 00 ff 20 6f 76 65 72  |fox jumps.. over|\n" +
		"                        0020  20 74 68 65 20 6c 61 7a                           | the laz| (+5 bytes)\n" +
		"56        101   0       \n"
	assert.Equal(t, want, stdout)
	stdout, _, status = shmctl(t, dir, "peek", "q", "--preview", "0", "-n", "1")
	require.Equal(t, 0, status)
	assert.Contains(t, stdout, "45      (+45 bytes)\n")
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

// TestWatchAligned: every row's columns line up under the header's, whatever the values'
// widths (a tab writer flushed per line would align each line on its own).
func TestWatchAligned(t *testing.T) {
	dir := testDir(t)
	writeRecords(t, dir, "q", "spsc") // its writer stays attached
	stdout, stderr, status := shmctl(t, dir, "watch", "q", "--interval", "20ms", "--count", "2")
	require.Equal(t, 0, status, stderr)
	lines := splitLines(stdout)
	require.Len(t, lines, 3)
	assert.Regexp(t, `^    TIME  WRITE msg/s  WRITE B/s  READ msg/s  READ B/s    FILL  ASLEEP R/W  WRITER$`, lines[0])
	for _, l := range lines[1:] {
		assert.Regexp(t, `^\d\d:\d\d:\d\d {12}0 {10}0 {11}0 {9}0    0\.0% {9}0/0  attached$`, l)
	}
	assert.Equal(t, "950", formatRate(950))
	assert.Equal(t, "12.3k", formatRate(12345))
	assert.Equal(t, "1.26M", formatRate(1.26e6))
	assert.Equal(t, "179M", formatRate(178.8e6))
	assert.Equal(t, "3.4G", formatRate(3.4e9))
}

// TestWatchJSON: one JSON object per interval and line, whose rates times the interval are
// the counters' growth over it.
func TestWatchJSON(t *testing.T) {
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "create", "q", "--kind", "mpmc", "--size", "64KiB")
	require.Equal(t, 0, status, stderr)
	seg, err := shm.Open("q", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	w, err := ring.NewMPMCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	done := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
				_ = w.TryWrite(1, []byte("12345678"))
			}
		}
	}()
	stdout, stderr, status := shmctl(t, dir, "watch", "q", "--interval", "30ms", "--count", "4", "--json")
	close(done)
	<-writerDone
	require.Equal(t, 0, status, stderr)
	lines := splitLines(stdout)
	require.Len(t, lines, 4, stdout)
	var samples []watchSample
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		assert.Equal(t, []string{"dead_sleepers", "fill_percent", "read_bytes_per_sec", "read_msgs_per_sec", "readers",
			"readers_asleep", "seconds", "time", "write_bytes_per_sec", "write_msgs_per_sec", "writer_state", "writers",
			"writers_asleep"}, keys(m))
		var s watchSample
		require.NoError(t, json.Unmarshal([]byte(l), &s))
		samples = append(samples, s)
	}
	grew := uint64(0)
	for i := 1; i < len(samples); i++ {
		a, b := samples[i-1], samples[i]
		delta := b.Writers.Messages - a.Writers.Messages
		grew += delta
		assert.InDelta(t, float64(delta), b.WriteMsgsPerSec*b.Seconds, 1e-6)
		assert.InDelta(t, float64(8*delta), b.WriteBytesPerSec*b.Seconds, 1e-6)
		assert.Equal(t, "attached", b.WriterState)
	}
	assert.NotZero(t, grew, "the writer wrote during the watch")
}

func splitLines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }

// TestPeekTopic: peek shows what a topic holds, from the oldest record or --from, and
// consumes nothing; --from is for topics only.
func TestPeekTopic(t *testing.T) {
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "create", "ticks", "--kind", "topic", "--size", "4KiB", "--slot", "512", "--policy", "overwrite")
	require.Equal(t, 0, status, stderr)
	seg, err := shm.Open("ticks", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	sub, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{Start: ring.FromOldest})
	require.NoError(t, err)
	defer sub.Close()
	p, err := ring.NewPublisher(seg, ring.Options{})
	require.NoError(t, err)
	defer p.Close()
	for i := range 12 { // 8 slots: 0..3 are overwritten
		require.NoError(t, p.TryWrite(uint32(100+i), []byte(fmt.Sprintf("tick %d", i))))
	}
	before, err := os.ReadFile(filepath.Join(dir, "ticks"))
	require.NoError(t, err)

	stdout, stderr, status := shmctl(t, dir, "peek", "ticks", "-n", "3")
	require.Equal(t, 0, status, stderr)
	assert.Regexp(t, `POSITION\s+TYPE\s+LENGTH\s+DATA`, stdout)
	assert.Regexp(t, `4\s+104\s+6\s+0000  74 69 63 6b 20 34 .*\|tick 4\|`, stdout, "from the oldest record held")
	assert.Regexp(t, `6\s+106\s+6\s+0000 .*\|tick 6\|`, stdout)
	assert.NotContains(t, stdout, "tick 7")
	assert.NotContains(t, stdout, "tick 3")

	stdout, _, status = shmctl(t, dir, "peek", "ticks", "--from", "10", "--json", "--preview", "4")
	require.Equal(t, 0, status)
	var recs []ring.PeekedRecord
	require.NoError(t, json.Unmarshal([]byte(stdout), &recs))
	require.Len(t, recs, 2)
	assert.EqualValues(t, 10, recs[0].Position)
	assert.EqualValues(t, 111, recs[1].Type)
	assert.Equal(t, 7, recs[1].Length)
	assert.Equal(t, "tick", string(recs[1].Data))

	stdout, _, status = shmctl(t, dir, "peek", "ticks", "--from", "12")
	require.Equal(t, 0, status)
	assert.Equal(t, "(no records)\n", stdout)

	after, err := os.ReadFile(filepath.Join(dir, "ticks"))
	require.NoError(t, err)
	assert.Equal(t, before, after, "peek changed nothing")
	_, err = sub.TryNext()
	var lag *ring.LagError
	require.ErrorAs(t, err, &lag, "the subscriber is where it was: at 0, lapped")
	assert.EqualValues(t, 4, lag.Missed)

	writeRecords(t, dir, "q", "spsc", "x")
	_, stderr, status = shmctl(t, dir, "peek", "q", "--from", "1")
	assert.Equal(t, 2, status, stderr)
}

// TestWatchTopic: watch runs on a topic; FILL is the slowest subscriber's lag.
func TestWatchTopic(t *testing.T) {
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "create", "ticks", "--kind", "topic", "--size", "4KiB", "--slot", "512")
	require.Equal(t, 0, status, stderr)
	seg, err := shm.Open("ticks", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	sub, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{})
	require.NoError(t, err)
	defer sub.Close()
	p, err := ring.NewPublisher(seg, ring.Options{})
	require.NoError(t, err)
	defer p.Close()
	for range 2 { // 2 of 8 slots behind
		require.NoError(t, p.TryWrite(0, []byte("x")))
	}
	stdout, stderr, status := shmctl(t, dir, "watch", "ticks", "--interval", "20ms", "--count", "2")
	require.Equal(t, 0, status, stderr)
	lines := splitLines(stdout)
	require.Len(t, lines, 3, stdout)
	assert.Contains(t, lines[2], "25.0%")
	assert.Contains(t, lines[2], "attached")
}
