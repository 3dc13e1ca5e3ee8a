package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func TestMain(m *testing.M) {
	proctest.Register("holder", runHolder)
	proctest.Register("subscriber", runSubscriber)
	proctest.Register("sleeper", runSleeper)
	proctest.Register("writer", runWriter)
	proctest.Register("shmctl", func(c *proctest.Child) error { os.Exit(run(c.Args, os.Stdout, os.Stderr)); return nil })
	proctest.Main(m)
}

// runSubscriber subscribes to topic Args[1] in Args[0], from the oldest record, durably
// under the name Args[2] if there is one, reads nothing and waits to be killed.
func runSubscriber(c *proctest.Child) error {
	s, err := shm.Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	opts := ring.SubscribeOptions{Start: ring.FromOldest}
	if len(c.Args) > 2 {
		opts.Name = c.Args[2]
	}
	if _, err := ring.Subscribe(context.Background(), s, opts); err != nil {
		return err
	}
	c.Point("subscribed")
	select {}
}

// startSubscriber runs a subscriber of topic dir/name in another process (args: a durable
// name, or none) and waits until it has subscribed.
func startSubscriber(t *testing.T, dir, name string, args ...string) *proctest.Proc {
	t.Helper()
	p := proctest.Start(t, "subscriber", proctest.Options{Args: append([]string{dir, name}, args...)})
	p.WaitPoint("subscribed", 20*time.Second)
	return p
}

// runHolder attaches a ring writer to segment Args[1] in Args[0] and waits to be killed.
func runHolder(c *proctest.Child) error {
	s, err := shm.Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	if _, err := ring.NewWriter(s, ring.Options{}); err != nil {
		return err
	}
	c.Point("attached")
	select {}
}

// runSleeper attaches a ring reader to segment Args[1] in Args[0], with futex waits, and
// waits for a record (asleep in the kernel) until killed.
func runSleeper(c *proctest.Child) error {
	s, err := shm.Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	r, err := ring.NewReader(s, ring.Options{Wait: ring.Futex()})
	if err != nil {
		return err
	}
	c.Point("reading")
	_, err = r.Next(context.Background())
	return err
}

// runWriter attaches a ring writer to segment Args[1] in Args[0], writes Args[2] messages
// of Args[3] bytes, and waits to be killed.
func runWriter(c *proctest.Child) error {
	s, err := shm.Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	w, err := ring.NewWriter(s, ring.Options{})
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(c.Args[2])
	size, _ := strconv.Atoi(c.Args[3])
	for range n {
		if err := w.Write(context.Background(), 1, make([]byte, size)); err != nil {
			return err
		}
	}
	c.Point("written")
	select {}
}

// startHolder runs a holder of dir/name in another process and waits until it is attached.
func startHolder(t *testing.T, dir, name string) *proctest.Proc {
	t.Helper()
	p := proctest.Start(t, "holder", proctest.Options{Args: []string{dir, name}})
	p.WaitPoint("attached", 20*time.Second)
	return p
}

// shmctl runs a command line through run, as main does, with --dir pointing at dir.
func shmctl(t *testing.T, dir string, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	var out, errOut bytes.Buffer
	status = run(append(args, "--dir", dir), &out, &errOut)
	return out.String(), errOut.String(), status
}

func testDir(t testing.TB) string {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	d, err := os.MkdirTemp(base, "shmctl-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// oneLine asserts that a failure printed exactly one line, starting "shmctl: ".
func oneLine(t *testing.T, stderr string) {
	t.Helper()
	assert.True(t, strings.HasPrefix(stderr, "shmctl: "), "stderr: %q", stderr)
	assert.Equal(t, 1, strings.Count(stderr, "\n"), "stderr: %q", stderr)
	assert.NotContains(t, stderr, "goroutine")
	assert.NotContains(t, stderr, "panic")
}

func TestUsageErrors(t *testing.T) {
	dir := testDir(t)
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"ls", "--bogus"},
		{"ls", "extra"},
		{"stat"},
		{"stat", "a", "b"},
		{"rm"},
		{"create", "x"},
		{"create", "x", "--kind", "ring", "--size", "64KiB"},
		{"create", "x", "--kind", "spsc", "--size", "lots"},
		{"create", "x", "--kind", "spsc", "--size", "64KB"},
		{"create", "x", "--kind", "spsc", "--size", "64KiB", "--slot", "64"},
		{"create", "x", "--kind", "spsc", "--size", "64KiB", "--mode", "rw"},
		{"create", "x", "--kind", "spsc", "--size", "64KiB", "--policy", "block"},
		{"create", "x", "--kind", "mpmc", "--size", "64KiB", "--policy", "overwrite"},
		{"create", "x", "--kind", "topic", "--size", "64KiB", "--policy", "drop"},
		{"gc", "now"},
		{"tail"},
		{"tail", "q", "--count", "-1"},
		{"tail", "q", "--type", "x"},
		{"watch", "q", "--count", "-1"},
		{"serve-metrics", "extra", "--listen", "127.0.0.1:0"},
	} {
		_, stderr, status := shmctl(t, dir, args...)
		assert.Equal(t, 2, status, "%v: %s", args, stderr)
		assert.True(t, strings.HasPrefix(stderr, "shmctl: ") || strings.Contains(stderr, "Usage:"), "%v: %s", args, stderr)
		assert.NotContains(t, stderr, "goroutine")
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "a usage error creates nothing")
}

func TestHelpEverySubcommand(t *testing.T) {
	dir := testDir(t)
	subs := []string{"create", "ls", "stat", "watch", "peek", "tail", "rm", "gc", "serve-metrics", "completion"}
	for _, sub := range subs {
		stdout, stderr, status := shmctl(t, dir, sub, "--help")
		assert.Equal(t, 0, status, sub)
		assert.Contains(t, stdout, "Usage:", sub)
		assert.Contains(t, stdout, "--dir", sub)
		assert.Empty(t, stderr, sub)
	}
	stdout, _, status := shmctl(t, dir, "--help")
	assert.Equal(t, 0, status)
	for _, sub := range subs {
		assert.Contains(t, stdout, sub)
	}
}

// TestSession is the README's session: create, inspect, remove.
func TestSession(t *testing.T) {
	dir := testDir(t)
	stdout, stderr, status := shmctl(t, dir, "create", "orders", "--kind", "spsc", "--size", "1MiB")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stdout, "created orders (spsc, 1MiB data)")
	assert.Empty(t, stderr)
	st, err := os.Stat(filepath.Join(dir, "orders"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	stdout, _, status = shmctl(t, dir, "ls")
	require.Equal(t, 0, status)
	assert.Regexp(t, `orders\s+spsc\s+1MiB\s+0 alive\s+ok`, stdout)

	stdout, _, status = shmctl(t, dir, "stat", "orders")
	require.Equal(t, 0, status)
	assert.Contains(t, stdout, "spsc, layout 2.0")
	assert.Contains(t, stdout, "mode 0600")

	stdout, _, status = shmctl(t, dir, "rm", "orders")
	require.Equal(t, 0, status)
	assert.Equal(t, "removed orders\n", stdout)
	_, err = os.Stat(filepath.Join(dir, "orders"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestDirFromEnvironment(t *testing.T) {
	dir := testDir(t)
	t.Setenv("SHMQ_DIR", dir)
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"create", "envseg", "--kind", "spsc", "--size", "64KiB"}, &out, &errOut), errOut.String())
	_, err := os.Stat(filepath.Join(dir, "envseg"))
	assert.NoError(t, err)
}
