package ring_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// runMPMC starts writers and readers as processes and returns the readers' reports merged.
// With closeRing, the test holds a writer of its own from the start, so that the stream
// stays open until every writer process has ended, and then closes it: the last writer's
// Close ends the stream.
func runMPMC(t *testing.T, seg *shm.Segment, writers []procConfig, killWriter map[int]string, readers int, readerCfg procConfig, closeRing bool) (count, sum map[uint64]uint64, errs []string) {
	t.Helper()
	var holder *ring.MPMCWriter
	if closeRing {
		var err error
		holder, err = ring.NewMPMCWriter(seg, ring.Options{})
		require.NoError(t, err)
		defer holder.Close()
	}
	var rs []*proctest.Proc
	for range readers {
		rs = append(rs, proctest.Start(t, "mpmc-reader", proctest.Options{Args: readerCfg.args()}))
	}
	var ws []*proctest.Proc
	for i, cfg := range writers {
		ws = append(ws, proctest.Start(t, "mpmc-writer", proctest.Options{Args: cfg.args(), KillAt: killWriter[i]}))
	}
	for i, w := range ws {
		err := w.Wait(2 * time.Minute)
		if killWriter[i] != "" {
			require.True(t, w.Killed(), "writer %d was to be killed", i)
		} else {
			require.NoError(t, err)
		}
	}
	if holder != nil {
		require.NoError(t, holder.Close())
	}
	count, sum = map[uint64]uint64{}, map[uint64]uint64{}
	for _, r := range rs {
		var rep mpmcReport
		require.NoError(t, r.Result(0, &rep, 2*time.Minute))
		errs = append(errs, rep.Err)
		for w, n := range rep.Count {
			count[w] += n
			sum[w] += rep.Sum[w]
		}
	}
	return count, sum, errs
}

// TestMPMCAcrossProcesses: three writer processes and two reader processes under each wait
// strategy; every message is delivered exactly once, intact, in per-writer order.
func TestMPMCAcrossProcesses(t *testing.T) {
	for _, wait := range allWaits {
		for _, start := range []uint64{0, math.MaxUint64 - 5000} {
			t.Run(fmtCase(wait, start), func(t *testing.T) {
				dir := testDir(t)
				seg := newSegment(t, dir, "m", ring.Spec{Kind: ring.MPMC, Size: 256 * 256, SlotSize: 256})
				ring.SetMPMCPositions(seg, start)
				per := uint64(30_000)
				if testing.Short() {
					per = 5_000
				}
				var writers []procConfig
				for i := range 3 {
					// Writer 3 claims its batches with ReserveBatch: one CAS for up to 7 slots.
					writers = append(writers, procConfig{Dir: dir, Name: "m", Count: per, MinLen: msgHeader, MaxLen: 240,
						Wait: wait, Batch: 1 + i*3, KillAt: math.MaxUint64, WriterID: uint64(i + 1), UseBatch: i == 2})
				}
				readerCfg := procConfig{Dir: dir, Name: "m", Wait: wait, KillAt: math.MaxUint64}
				count, sum, errs := runMPMC(t, seg, writers, nil, 2, readerCfg, true)
				for i := range writers {
					id := uint64(i + 1)
					assert.Equal(t, per, count[id], "writer %d: messages delivered", id)
					assert.Equal(t, per*(per-1)/2, sum[id], "writer %d: each exactly once", id)
				}
				assert.Equal(t, []string{"ended", "ended"}, errs)
				st, err := ring.ReadStats(seg)
				require.NoError(t, err)
				assert.Zero(t, st.Readers.LateWakes+st.Writers.LateWakes)
				assert.Zero(t, st.Readers.Drops+st.Writers.Drops)
			})
		}
	}
}

// TestMPMCWriterKilledBetweenClaimAndPublish: a writer dies holding a claimed, unpublished
// slot. Readers skip it once it is known dead, the other writers' messages all arrive, and
// nothing the dead writer committed is lost.
func TestMPMCWriterKilledBetweenClaimAndPublish(t *testing.T) {
	for _, wait := range []string{"futex", "spin"} {
		t.Run(wait, func(t *testing.T) {
			dir := testDir(t)
			seg := newSegment(t, dir, "m", ring.Spec{Kind: ring.MPMC, Size: 64 * 128, SlotSize: 128})
			const per, killAt = 20_000, 3_000
			writers := []procConfig{
				{Dir: dir, Name: "m", Count: per, MinLen: msgHeader, MaxLen: 100, Wait: wait, Batch: 1, KillAt: killAt, WriterID: 1},
				{Dir: dir, Name: "m", Count: per, MinLen: msgHeader, MaxLen: 100, Wait: wait, Batch: 1, KillAt: math.MaxUint64, WriterID: 2},
			}
			readerCfg := procConfig{Dir: dir, Name: "m", Wait: wait, KillAt: math.MaxUint64}
			count, sum, errs := runMPMC(t, seg, writers, map[int]string{0: "after-reserve"}, 2, readerCfg, true)
			assert.EqualValues(t, killAt, count[1], "the dead writer's committed messages")
			assert.EqualValues(t, killAt*(killAt-1)/2, sum[1])
			assert.EqualValues(t, per, count[2])
			assert.EqualValues(t, per*(per-1)/2, sum[2])
			assert.Equal(t, []string{"ended", "ended"}, errs)
			st, err := ring.ReadStats(seg)
			require.NoError(t, err)
			assert.EqualValues(t, 1, st.Readers.Drops, "one slot skipped")
		})
	}
}

// TestMPMCReaderKilledHoldingRecord: a reader dies with a record borrowed; a live reader
// delivers it again.
func TestMPMCReaderKilledHoldingRecord(t *testing.T) {
	dir := testDir(t)
	newSegment(t, dir, "m", ring.Spec{Kind: ring.MPMC, Size: 1024 * 64, SlotSize: 64})
	const per = 500
	writer := procConfig{Dir: dir, Name: "m", Count: per, MinLen: msgHeader, MaxLen: 40, Wait: "futex", Batch: 10, KillAt: math.MaxUint64, WriterID: 1}
	w := proctest.Start(t, "mpmc-writer", proctest.Options{Args: writer.args()})
	require.NoError(t, w.Wait(time.Minute)) // all 500 are in the ring, and the ring is closed

	victim := proctest.Start(t, "mpmc-reader", proctest.Options{Args: procConfig{Dir: dir, Name: "m", Wait: "futex", KillAt: 0}.args(), KillAt: "after-borrow"})
	_ = victim.Wait(time.Minute)
	require.True(t, victim.Killed())

	// The record delivered again comes after the others: order is not kept across a crash.
	survivor := proctest.Start(t, "mpmc-reader", proctest.Options{Args: procConfig{Dir: dir, Name: "m", Wait: "futex", KillAt: math.MaxUint64, Unordered: true}.args()})
	var rep mpmcReport
	require.NoError(t, survivor.Result(0, &rep, time.Minute))
	assert.Equal(t, "ended", rep.Err)
	assert.EqualValues(t, per, rep.Count[1], "the dead reader's record was delivered again")
	assert.EqualValues(t, per*(per-1)/2, rep.Sum[1])
}
