//go:build linux

package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/shm"
)

// TestChildrenOfATruncatedRing: a writer and a reader child moving messages as fast as they
// can through a ring whose file the parent truncates report an error naming the truncation;
// neither dies of SIGBUS with a stack trace (as they did before issue 11).
func TestChildrenOfATruncatedRing(t *testing.T) {
	if os.Getenv("SHMQ_RACE") != "" {
		// .ci/run's race-detector run: a fault inside the race runtime's own accesses
		// cannot become a panic, so truncation is tested in the run without -race.
		t.Skip("truncation is tested without the race detector")
	}
	for _, transport := range []string{"spsc", "mpmc"} {
		t.Run(transport, func(t *testing.T) {
			cfg, err := parseFlags(nil, io.Discard)
			require.NoError(t, err)
			b, err := newBench(cfg, io.Discard)
			require.NoError(t, err)
			t.Cleanup(b.cleanup)
			name, err := b.newSegment(transport, 64)
			require.NoError(t, err)
			base := childConfig{Scenario: "throughput", Transport: transport, Wait: "spin", Codec: "raw",
				Dir: b.dir, Ring: name, Size: 64, Duration: 30 * time.Second, Batch: 1, CPU: -1}
			var children []*child
			for _, role := range []string{"reader", "writer"} {
				c := base
				c.Role = role
				ch, err := b.start(c)
				require.NoError(t, err)
				children = append(children, ch)
			}
			time.Sleep(500 * time.Millisecond) // both in their hot loops
			require.NoError(t, os.Truncate(filepath.Join(b.dir, name), 0))
			for i, ch := range children {
				_, err := b.wait(ch, 30*time.Second)
				require.Error(t, err, "child %d", i)
				msg := err.Error()
				t.Logf("child %d: %.600s", i, msg)
				assert.True(t, strings.Contains(msg, shm.ErrTruncated.Error()) && !strings.Contains(msg, "SIGBUS"),
					"child %d must report the truncation, not die of SIGBUS: %.600s", i, msg)
			}
		})
	}
}
