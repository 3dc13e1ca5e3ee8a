package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// syncBuffer is a bytes.Buffer a command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// background is a shmctl command running in a goroutine, as main would run it.
type background struct {
	stdout, stderr syncBuffer
	cancel         context.CancelFunc
	done           chan int
}

// startShmctl runs a command line with --dir dir in the background. The test's cleanup
// cancels it (as an interrupt would) and waits for it.
func startShmctl(t testing.TB, dir string, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, done: make(chan int, 1)}
	go func() { b.done <- runContext(ctx, append(args, "--dir", dir), &b.stdout, &b.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-b.done:
		case <-time.After(20 * time.Second):
			t.Errorf("shmctl %v did not end when cancelled", args)
		}
	})
	return b
}

// wait returns the exit status once the command ends by itself.
func (b *background) wait(t testing.TB) int {
	t.Helper()
	select {
	case status := <-b.done:
		b.done <- status // for the cleanup
		return status
	case <-time.After(20 * time.Second):
		t.Fatalf("shmctl did not end; stdout %q, stderr %q", b.stdout.String(), b.stderr.String())
		return -1
	}
}

// waitOutput waits until the command's output has at least n lines and returns them.
func (b *background) waitOutput(t testing.TB, n int) []string {
	t.Helper()
	var lines []string
	require.Eventually(t, func() bool {
		lines = splitLines(b.stdout.String())
		return len(lines) >= n && lines[0] != ""
	}, 20*time.Second, time.Millisecond, "want %d lines; stdout %q, stderr %q", n, b.stdout.String(), b.stderr.String())
	return lines
}

func jsonLines(t *testing.T, lines []string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		out = append(out, m)
	}
	return out
}

// ringEnds creates ring name of kind in dir and attaches a writer and a reader to it.
func ringEnds(t *testing.T, dir, name, kind string) (ring.Writer, ring.Reader) {
	t.Helper()
	_, stderr, status := shmctl(t, dir, "create", name, "--kind", kind, "--size", "64KiB")
	require.Equal(t, 0, status, stderr)
	seg, err := shm.Open(name, shm.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { seg.Close() })
	w, err := ring.NewWriter(seg, ring.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	r, err := ring.NewReader(seg, ring.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return w, r
}

// TestTailRing: tail follows an SPSC and an MPMC ring by looking only: it shows what was
// not yet consumed (--oldest), then what comes, reports what the reader consumed before it
// looked, and takes nothing from the reader.
func TestTailRing(t *testing.T) {
	for _, kind := range []string{"spsc", "mpmc"} {
		t.Run(kind, func(t *testing.T) {
			dir := testDir(t)
			w, r := ringEnds(t, dir, "q", kind)
			require.NoError(t, w.TryWrite(1, []byte("a")))
			require.NoError(t, w.TryWrite(2, []byte("b")))

			// Looks every 2 s: the test does what follows between two looks.
			tail := startShmctl(t, dir, "tail", "q", "--oldest", "--json", "--interval", "2s")
			recs := jsonLines(t, tail.waitOutput(t, 2))
			assert.Equal(t, "YQ==", recs[0]["data"])
			assert.EqualValues(t, 1, recs[0]["type"])
			assert.Equal(t, "Yg==", recs[1]["data"])

			buf := make([]byte, 64)
			for _, want := range []string{"a", "b"} {
				n, _, err := r.TryRead(buf)
				require.NoError(t, err)
				assert.Equal(t, want, string(buf[:n]), "tail took nothing")
			}
			require.NoError(t, w.TryWrite(3, []byte("c")))
			_, _, err := r.TryRead(buf) // c is consumed before tail looks again
			require.NoError(t, err)
			require.NoError(t, w.TryWrite(4, []byte("d")))

			recs = jsonLines(t, tail.waitOutput(t, 4))
			require.Len(t, recs, 4, "a gap and d")
			gap, ok := recs[2]["gap"].(map[string]any)
			require.True(t, ok, "%v", recs[2])
			assert.Less(t, gap["from"].(float64), gap["to"].(float64))
			assert.Equal(t, gap["to"], recs[3]["position"], "d follows the gap")
			assert.Equal(t, "ZA==", recs[3]["data"])
			assert.EqualValues(t, 4, recs[3]["type"])

			n, typ, err := r.TryRead(buf)
			require.NoError(t, err)
			assert.Equal(t, "d", string(buf[:n]), "tail took nothing")
			assert.EqualValues(t, 4, typ)
			assert.Empty(t, tail.stderr.String())
		})
	}
}

// TestTailTypesAndCount: --type keeps the records of the types named, --count stops after
// that many, and the human output is peek's, a record a row.
func TestTailTypesAndCount(t *testing.T) {
	dir := testDir(t)
	w, _ := ringEnds(t, dir, "q", "spsc")
	for i, typ := range []uint32{1, 2, 3, 1} {
		require.NoError(t, w.TryWrite(typ, []byte(fmt.Sprintf("record %d", i))))
	}
	tail := startShmctl(t, dir, "tail", "q", "--oldest", "--type", "1,3", "--count", "2")
	require.Equal(t, 0, tail.wait(t), tail.stderr.String())
	lines := splitLines(tail.stdout.String())
	require.Len(t, lines, 3, tail.stdout.String())
	assert.Equal(t, "    POSITION    TYPE  LENGTH  DATA", lines[0])
	assert.Regexp(t, `^ {11}0 {7}1 {7}8  0000  72 65 63 6f 72 64 20 30 {27}\|record 0\|$`, lines[1])
	assert.Regexp(t, `^ {10}\d+ {7}3 {7}8  0000 .*\|record 2\|$`, lines[2])

	// By default tail shows only what comes after it started (its header says when).
	tail = startShmctl(t, dir, "tail", "q", "--count", "1", "--interval", "5ms")
	tail.waitOutput(t, 1)
	require.NoError(t, w.TryWrite(9, []byte("new")))
	require.Equal(t, 0, tail.wait(t))
	lines = splitLines(tail.stdout.String())
	require.Len(t, lines, 2)
	assert.Regexp(t, `^ +\d+ {7}9 {7}3  0000  6e 65 77 .*\|new\|$`, lines[1])

	_, stderr, status := shmctl(t, dir, "tail", "q", "--peek")
	assert.Equal(t, 2, status, "--peek is for topics")
	assert.Contains(t, stderr, "topics only")
	_, stderr, status = shmctl(t, dir, "tail", "missing")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
}

// TestTailTopic: on a topic tail is a subscriber of its own: it gets what is published,
// durable subscribers keep their positions, and it leaves no subscription behind; with
// --peek it does not subscribe at all.
func TestTailTopic(t *testing.T) {
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "create", "ticks", "--kind", "topic", "--size", "64KiB", "--policy", "block")
	require.Equal(t, 0, status, stderr)
	startSubscriber(t, dir, "ticks", "audit") // another process, durable, reads nothing
	seg, err := shm.Open("ticks", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	p, err := ring.NewPublisher(seg, ring.Options{})
	require.NoError(t, err)
	defer p.Close()
	subscriptions := func() []ring.TopicSubscription {
		st, err := ring.ReadTopicStats(seg)
		require.NoError(t, err)
		return st.Subscriptions
	}

	tail := startShmctl(t, dir, "tail", "ticks", "--json", "--count", "3", "--type", "7")
	require.Eventually(t, func() bool { return len(subscriptions()) == 2 }, 20*time.Second, time.Millisecond,
		"tail subscribes")
	for i := range 4 {
		require.NoError(t, p.TryWrite(uint32(7-i%2), []byte(fmt.Sprintf("tick %d", i)))) // types 7, 6, 7, 6
	}
	require.NoError(t, p.TryWrite(7, []byte("tick 4")))
	require.Equal(t, 0, tail.wait(t), tail.stderr.String())
	recs := jsonLines(t, splitLines(tail.stdout.String()))
	require.Len(t, recs, 3)
	for i, want := range []struct {
		pos  float64
		data string
	}{{0, "tick 0"}, {2, "tick 2"}, {4, "tick 4"}} {
		assert.Equal(t, want.pos, recs[i]["position"])
		assert.Equal(t, base64(want.data), recs[i]["data"])
	}
	subs := subscriptions()
	require.Len(t, subs, 1, "tail's subscription went with it")
	assert.Equal(t, "audit", subs[0].Name)
	assert.EqualValues(t, 5, subs[0].Lag, "the durable subscriber is where it was")

	// An interrupt ends a tail asleep waiting for records: status 0, subscription gone.
	tail = startShmctl(t, dir, "tail", "ticks")
	require.Eventually(t, func() bool { return len(subscriptions()) == 2 }, 20*time.Second, time.Millisecond)
	tail.cancel()
	require.Equal(t, 0, tail.wait(t), tail.stderr.String())
	assert.Len(t, subscriptions(), 1)

	// --peek: looks only, from the oldest record held.
	tail = startShmctl(t, dir, "tail", "ticks", "--peek", "--oldest", "--count", "2", "--json", "--interval", "5ms")
	require.Equal(t, 0, tail.wait(t), tail.stderr.String())
	recs = jsonLines(t, splitLines(tail.stdout.String()))
	require.Len(t, recs, 2)
	assert.Equal(t, base64("tick 1"), recs[1]["data"])
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.Equal(t, 1, st.ReadersOpen, "only the durable subscriber: tail --peek never subscribed")
}

// TestTailTopicLapped: a tail that falls a ring behind an overwrite topic says how many
// records it missed, and goes on.
func TestTailTopicLapped(t *testing.T) {
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "create", "ticks", "--kind", "topic", "--size", "4KiB", "--slot", "512", "--policy", "overwrite")
	require.Equal(t, 0, status, stderr)
	seg, err := shm.Open("ticks", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	p, err := ring.NewPublisher(seg, ring.Options{})
	require.NoError(t, err)
	defer p.Close()
	for i := range 12 { // 8 slots: 0..3 are overwritten
		require.NoError(t, p.TryWrite(1, []byte(fmt.Sprintf("tick %d", i))))
	}
	// As a subscriber from the oldest and with --peek alike.
	for _, args := range [][]string{{}, {"--peek"}} {
		tail := startShmctl(t, dir, append([]string{"tail", "ticks", "--oldest", "--count", "8", "--json"}, args...)...)
		require.Equal(t, 0, tail.wait(t), tail.stderr.String())
		recs := jsonLines(t, splitLines(tail.stdout.String()))
		require.Len(t, recs, 8, "%v", args)
		assert.Equal(t, base64("tick 4"), recs[0]["data"], "%v", args)
		assert.Equal(t, base64("tick 11"), recs[7]["data"], "%v", args)
	}
}

func base64(s string) string {
	b, _ := json.Marshal([]byte(s))
	return strings.Trim(string(b), `"`)
}
