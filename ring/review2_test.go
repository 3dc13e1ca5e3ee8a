package ring_test

// Regression tests from the second review of the ring commits 1dd50ee..9e35c0d: each proved
// a bug (it failed before the fix named in its comment) and now guards the fix.

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
)

// review2HighPos is a position whose claim (position + 1) has bit 62 set and bit 63 clear:
// the claim of any reader or writer at or past it looks like a skip lock (claimSkip).
const review2HighPos = 1 << 62

// readAllMPMC reads until the end of the stream and returns the payload's first byte of
// every record, in arrival order.
func readAllMPMC(t *testing.T, r *ring.MPMCReader, timeout time.Duration) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var got []byte
	for {
		rec, err := r.Next(ctx)
		if err != nil {
			return got, err
		}
		got = append(got, rec.Data[0])
		r.Release()
	}
}

// Bug (1dd50ee, claimSkip = 1<<62 in the claim word): a claim is position+1, so once
// positions reach 2^62-1 every ordinary claim has the skip-lock bit. A reader that closes
// holding a record orphans its cell with such a claim; the repairer takes it for a skip lock
// (takeOverSkip), clears it and never adopts the record: a committed message is lost, and
// its slot is never released, so the ring wedges one lap later. The same at position 0
// works (the control subtest).
func TestReview2MPMCOrphanedClaimAtHighPosition(t *testing.T) {
	for _, start := range []uint64{0, review2HighPos} {
		t.Run(fmtStart(start), func(t *testing.T) {
			if start != 0 {
				// Was (fixed: the claim flags moved to the role word): a reader's claim at a position >= 2^62-1 reads as a skip lock; the borrowed record is lost (TestReview2MPMCOrphanedClaimAtHighPosition)
			}
			dir := testDir(t)
			seg := newSegment(t, dir, "m", ring.Spec{Kind: ring.MPMC, Size: 64 * 64, SlotSize: 64})
			ring.SetMPMCPositions(seg, start)
			w, err := ring.NewMPMCWriter(seg, ring.Options{})
			require.NoError(t, err)
			for i := range 3 {
				require.NoError(t, w.TryWrite(uint32(i), []byte{byte(i)}))
			}
			require.NoError(t, w.Close()) // the stream ends once all is read

			r1, err := ring.NewMPMCReader(seg, ring.Options{Wait: ring.Futex()})
			require.NoError(t, err)
			rec, err := r1.TryNext()
			require.NoError(t, err)
			require.Equal(t, byte(0), rec.Data[0])
			require.NoError(t, r1.Close()) // closes holding record 0: its cell is orphaned

			r2, err := ring.NewMPMCReader(seg, ring.Options{Wait: ring.Futex()})
			require.NoError(t, err)
			defer r2.Close()
			got, err := readAllMPMC(t, r2, 5*time.Second)
			require.ErrorIs(t, err, ring.ErrEndOfStream)
			assert.ElementsMatch(t, []byte{0, 1, 2}, got, "record 0 is delivered again (at-least-once)")
			r1.Release() // let go of r1's pin
		})
	}
}

func fmtStart(start uint64) string {
	if start == 0 {
		return "start=0"
	}
	return "start=2^62"
}

// Bug (same cause, cross-process): a reader process killed holding a record at a position
// >= 2^62-1 loses that record for good.
func TestReview2MPMCReaderKilledAtHighPosition(t *testing.T) {
	// Was (fixed: the claim flags moved to the role word): a dead reader's claim at a position >= 2^62-1 reads as a skip lock; its record is lost (TestReview2MPMCReaderKilledAtHighPosition)
	dir := testDir(t)
	seg := newSegment(t, dir, "m", ring.Spec{Kind: ring.MPMC, Size: 1024 * 64, SlotSize: 64})
	ring.SetMPMCPositions(seg, review2HighPos)
	const per = 100
	writer := procConfig{Dir: dir, Name: "m", Count: per, MinLen: msgHeader, MaxLen: 40, Wait: "futex", Batch: 10, KillAt: math.MaxUint64, WriterID: 1}
	w := proctest.Start(t, "mpmc-writer", proctest.Options{Args: writer.args()})
	require.NoError(t, w.Wait(time.Minute))

	victim := proctest.Start(t, "mpmc-reader", proctest.Options{Args: procConfig{Dir: dir, Name: "m", Wait: "futex", KillAt: 0}.args(), KillAt: "after-borrow"})
	_ = victim.Wait(time.Minute)
	require.True(t, victim.Killed())

	survivor := proctest.Start(t, "mpmc-reader", proctest.Options{Args: procConfig{Dir: dir, Name: "m", Wait: "futex", KillAt: math.MaxUint64, Unordered: true}.args()})
	var rep mpmcReport
	require.NoError(t, survivor.Result(0, &rep, time.Minute))
	assert.Equal(t, "ended", rep.Err)
	assert.EqualValues(t, per, rep.Count[1], "the dead reader's record was delivered again")
	assert.EqualValues(t, per*(per-1)/2, rep.Sum[1])
}
