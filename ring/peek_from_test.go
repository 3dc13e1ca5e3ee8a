package ring_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// TestPeekFromFollows: PeekFrom goes on where the last call stopped, sees records written
// since, reports what the reader consumed before it looked, and consumes nothing.
func TestPeekFromFollows(t *testing.T) {
	for _, spec := range []ring.Spec{{Kind: ring.SPSC, Size: 4096}, {Kind: ring.MPMC, Size: 4096, SlotSize: 64}} {
		t.Run(spec.Kind.String(), func(t *testing.T) {
			dir := testDir(t)
			seg := newSegment(t, dir, "q", spec)
			w, err := ring.NewWriter(seg, ring.Options{})
			require.NoError(t, err)
			defer w.Close()
			r, err := ring.NewReader(seg, ring.Options{})
			require.NoError(t, err)
			defer r.Close()
			ins, err := shm.Inspect("q", shm.Options{Dir: dir})
			require.NoError(t, err)
			defer ins.Close()

			require.NoError(t, w.TryWrite(1, []byte("one")))
			require.NoError(t, w.TryWrite(2, []byte("two")))
			st, err := ring.ReadStats(ins)
			require.NoError(t, err)
			recs, skipped, err := ring.PeekFrom(ins, st.ReadPos, 10, 16)
			require.NoError(t, err)
			require.Len(t, recs, 2)
			assert.Zero(t, skipped)
			assert.Equal(t, "one", string(recs[0].Data))
			next := recs[1].Next

			recs, skipped, err = ring.PeekFrom(ins, next, 10, 16)
			require.NoError(t, err)
			assert.Empty(t, recs, "nothing new")
			assert.Zero(t, skipped)

			require.NoError(t, w.TryWrite(3, []byte("three")))
			recs, _, err = ring.PeekFrom(ins, next, 10, 16)
			require.NoError(t, err)
			require.Len(t, recs, 1)
			assert.Equal(t, "three", string(recs[0].Data))
			assert.Equal(t, uint32(3), recs[0].Type)
			next = recs[0].Next

			// The reader consumes everything, then two more records come: PeekFrom from
			// before the reader's position reports the gap.
			buf := make([]byte, 16)
			for range 3 {
				_, _, err := r.TryRead(buf)
				require.NoError(t, err)
			}
			require.NoError(t, w.TryWrite(4, []byte("four")))
			_, _, err = r.TryRead(buf)
			require.NoError(t, err)
			require.NoError(t, w.TryWrite(5, []byte("five")))
			recs, skipped, err = ring.PeekFrom(ins, next, 10, 16)
			require.NoError(t, err)
			require.Len(t, recs, 1)
			assert.Equal(t, "five", string(recs[0].Data))
			assert.NotZero(t, skipped, "record four was read before PeekFrom looked")

			n, typ, err := r.TryRead(buf)
			require.NoError(t, err)
			assert.Equal(t, "five", string(buf[:n]), "PeekFrom consumed nothing")
			assert.Equal(t, uint32(5), typ)

			_, _, err = ring.PeekFrom(ins, recs[0].Next+1<<20, 10, 16)
			assert.ErrorIs(t, err, ring.ErrCorrupt, "a position past the writer")
		})
	}
}

func TestPeekFromTopic(t *testing.T) {
	dir := testDir(t)
	newSegment(t, dir, "t", ring.Spec{Kind: ring.Topic, Size: 4096, SlotSize: 64, Policy: ring.Block})
	ins, err := shm.Inspect("t", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer ins.Close()
	_, _, err = ring.PeekFrom(ins, 0, 1, 1)
	assert.ErrorIs(t, err, ring.ErrKind)
}

// TestReadStatsDeadSleeper: a process that dies asleep in a reader's wait is not counted
// asleep; its waiting mark is reported as a dead sleeper's.
func TestReadStatsDeadSleeper(t *testing.T) {
	dir := testDir(t)
	seg := newSegment(t, dir, "spsc", ring.Spec{Kind: ring.SPSC, Size: 4096})
	_ = seg
	cfg := procConfig{Dir: dir, Name: "spsc", Wait: "futex"}
	child := proctest.Start(t, "idle-reader", proctest.Options{Args: cfg.args()})
	child.WaitPoint("ready", 20*time.Second)
	ins, err := shm.Inspect("spsc", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer ins.Close()
	var st ring.Stats
	require.Eventually(t, func() bool {
		st, err = ring.ReadStats(ins)
		return err == nil && st.ReadersAsleep == 1
	}, 20*time.Second, time.Millisecond, "the child's reader goes to sleep")
	assert.Zero(t, st.DeadSleepers)

	child.Kill()
	_ = child.Wait(20 * time.Second)
	st, err = ring.ReadStats(ins)
	require.NoError(t, err)
	assert.Zero(t, st.ReadersAsleep, "a dead process is not asleep")
	assert.Equal(t, 1, st.DeadSleepers, "its waiting mark is still there, nobody live cleared it")
}
