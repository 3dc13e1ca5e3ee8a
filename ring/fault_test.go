package ring_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// TestViewsOfATruncatedSegment: the views of a segment that another process truncated
// under the mapping return shm.ErrTruncated instead of dying of SIGBUS.
func TestViewsOfATruncatedSegment(t *testing.T) {
	if os.Getenv("SHMQ_RACE") != "" {
		// .ci/run's race-detector run: a fault inside the race runtime's own accesses
		// cannot become a panic, so truncation is tested in the run without -race.
		t.Skip("truncation is tested without the race detector")
	}
	for _, spec := range []ring.Spec{
		{Kind: ring.SPSC, Size: 1 << 16},
		{Kind: ring.Topic, Size: 1 << 16, SlotSize: 256, Policy: ring.Overwrite},
	} {
		t.Run(spec.Kind.String(), func(t *testing.T) {
			dir := testDir(t)
			seg, err := ring.Create("shrunk", spec, shm.Options{Dir: dir})
			require.NoError(t, err)
			w, err := ring.NewWriter(seg, ring.Options{})
			require.NoError(t, err)
			if spec.Kind == ring.Topic {
				s, err := ring.Subscribe(t.Context(), seg, ring.SubscribeOptions{})
				require.NoError(t, err)
				defer s.Close()
			}
			for range 100 {
				require.NoError(t, w.TryWrite(1, make([]byte, 200)))
			}
			// The endpoints and the writable handle go first: their Close writes to the
			// mapping, which the truncation below would make fault (see the Caveats).
			require.NoError(t, seg.Close())
			view, err := shm.Inspect("shrunk", shm.Options{Dir: dir})
			require.NoError(t, err)
			defer view.Close()
			_, err = ring.ReadStats(view)
			require.NoError(t, err)

			// Another process truncates the file to nothing: every page is gone.
			require.NoError(t, os.Truncate(filepath.Join(dir, "shrunk"), 0))
			_, err = ring.ReadStats(view)
			assert.ErrorIs(t, err, shm.ErrTruncated)
			if spec.Kind == ring.Topic {
				_, err = ring.ReadTopicStats(view)
				assert.ErrorIs(t, err, shm.ErrTruncated)
				_, err = ring.PeekTopic(view, 0, 10, 16)
				assert.ErrorIs(t, err, shm.ErrTruncated)
			} else {
				_, err = ring.Peek(view, 10, 16)
				assert.ErrorIs(t, err, shm.ErrTruncated)
			}
		})
	}
}
