package main

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMain runs the worker when run starts this test binary as the worker process.
func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "worker" {
		main()
		return
	}
	os.Exit(m.Run())
}

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

// The example across two processes: every order gets its outcome, the flaky one after
// retries, the broken one in the poison queue, and the worker stops when told.
func TestRun(t *testing.T) {
	var out syncBuffer
	require.NoError(t, run(&out))
	s := out.String()
	t.Log("\n" + s)
	assert.Equal(t, 4, strings.Count(s, "\ndone:"))
	assert.Contains(t, s, "done:     order 2 after 3 attempt(s), correlation checkout-2")
	assert.Contains(t, s, "poisoned: order 4 (broken), reason: invalid card")
	assert.Contains(t, s, "worker | order 4 attempt 3: invalid card")
	assert.NotContains(t, s, "order 4 attempt 4", "two retries, then the poison queue")
	assert.Contains(t, s, "worker stopped; every order has an outcome")
	dir := s[strings.Index(s, "segments in ")+len("segments in ") : strings.Index(s, "\npublished")]
	_, err := os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "the segments' directory %s is removed", dir)
}
