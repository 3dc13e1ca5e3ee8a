// Package extest holds what the examples' tests share: a buffer the examples may print to
// from several goroutines, and checks that an example cleaned up after itself.
package extest

import (
	"bytes"
	"os"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/shmq/shmq/examples/internal/proc"
)

// Buffer is a bytes.Buffer safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var segmentsLine = regexp.MustCompile(`(?m)^segments: (\S+) `)

// Dir returns the segment directory an example printed ("segments: DIR ..."), or "".
func Dir(out string) string {
	m := segmentsLine.FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

// CheckCleanup fails t unless the example's output names its segment directory, the
// directory is gone, and no process of the example still runs.
func CheckCleanup(t *testing.T, out string) {
	t.Helper()
	dir := Dir(out)
	if dir == "" {
		t.Fatalf("the output names no segment directory:\n%s", out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("segment directory %s is still there (%v)", dir, err)
	}
	if pids := proc.Running(dir); len(pids) > 0 {
		t.Errorf("processes of the example still run: %v", pids)
	}
}

// Int returns the integer of the first submatch of re in out, failing t if there is none.
func Int(t *testing.T, out string, re *regexp.Regexp) int64 {
	t.Helper()
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no match for %v in the output:\n%s", re, out)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		t.Fatalf("%v: %v", re, err)
	}
	return n
}

// Deadline is how long an example's test may run it: generous, for a loaded machine.
const Deadline = 90 * time.Second
