package ring

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/shm"
)

// TestClosingWriterIsNoDeath: while a live process is closing a writer (its Close has
// uncounted it and not yet ended the stream), a reader that finds no writer counted and a
// dead writer's count left over does not take that for a death: the closing mark counts as
// a live writer. Without it, two checks in a row inside that window said ErrPeerDead.
func TestClosingWriterIsNoDeath(t *testing.T) {
	dir := t.TempDir()
	seg, err := Create("c", Spec{Kind: SPSC, Size: 4096}, shm.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { seg.Close() })
	// A writer process killed without closing: its writer count stays 1 (role of ring_test).
	args, _ := json.Marshal(map[string]string{"Dir": dir, "Name": "c", "Wait": "futex"})
	writer := proctest.Start(t, "idle-writer", proctest.Options{Args: []string{string(args)}})
	writer.WaitPoint("wrote", 20*time.Second)
	writer.Kill()
	_ = writer.Wait(time.Minute)

	r, err := NewSPSCReader(seg, Options{})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	live, dead, err := r.sidePeers(writerSide)
	require.NoError(t, err)
	require.False(t, live)
	require.True(t, dead, "the killed writer's count is left")

	// This process marks a writer closing, as a Close does between uncounting and ending.
	closing := layout.Uint32(r.pw, pwClosing)
	atomic.AddUint32(closing, 1)
	live, _, err = r.sidePeers(writerSide)
	require.NoError(t, err)
	assert.True(t, live, "a live process closing a writer counts as a live writer")
	for range 2 {
		d, err := r.otherSideDead()
		require.NoError(t, err)
		assert.False(t, d, "no death while a writer closes")
	}
	atomic.AddUint32(closing, ^uint32(0))
	d1, _ := r.otherSideDead()
	d2, _ := r.otherSideDead()
	assert.True(t, !d1 && d2, "the death is reported once nothing is closing (on the second check)")
}
