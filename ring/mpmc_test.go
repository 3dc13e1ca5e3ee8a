package ring_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newMPMCSeg(t testing.TB, slots uint64, slotSize uint32) *shm.Segment {
	t.Helper()
	return newSegment(t, testDir(t), "mpmc", ring.Spec{Kind: ring.MPMC, Size: slots * uint64(slotSize), SlotSize: slotSize})
}

func TestMPMCRoundTrip(t *testing.T) {
	seg := newMPMCSeg(t, 64, 64)
	w, err := ring.NewMPMCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	r, err := ring.NewMPMCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	assert.Equal(t, 48, w.MaxMessage())
	_, err = w.TryReserve(0, 49)
	assert.ErrorIs(t, err, ring.ErrTooLarge)

	ctx := context.Background()
	require.NoError(t, w.Write(ctx, 5, []byte("hello")))
	rec, err := r.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint32(5), rec.Type)
	assert.Equal(t, "hello", string(rec.Data))
	r.Release()
	_, err = r.TryNext()
	assert.ErrorIs(t, err, ring.ErrEmpty)

	for i := range 64 {
		require.NoError(t, w.TryWrite(uint32(i), []byte{byte(i)}))
	}
	assert.ErrorIs(t, w.TryWrite(0, nil), ring.ErrFull)
	_, _, err = r.TryRead(nil)
	assert.ErrorIs(t, err, ring.ErrShortBuffer)
	buf := make([]byte, 48)
	for i := range 64 {
		n, typ, err := r.TryRead(buf)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		assert.Equal(t, uint32(i), typ)
	}
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, 65, st.Writers.Messages)
	assert.EqualValues(t, 65, st.Readers.Messages)
}

// TestMPMCManyInProcess runs through the slots many times, near the 2^64 wrap too, with
// reserved batches, and checks every message.
func TestMPMCManyInProcess(t *testing.T) {
	for _, start := range []uint64{0, math.MaxUint64 - 1000} {
		seg := newMPMCSeg(t, 16, 256)
		ring.SetMPMCPositions(seg, start)
		w, err := ring.NewMPMCWriter(seg, ring.Options{})
		require.NoError(t, err)
		r, err := ring.NewMPMCReader(seg, ring.Options{})
		require.NoError(t, err)
		next := uint64(0)
		const total = 10_000
		for seq := uint64(0); seq < total; {
			for k := 0; k < 5 && seq < total; k++ {
				p, err := w.TryReserve(uint32(seq), msgLen(seq, msgHeader, 240))
				if errors.Is(err, ring.ErrFull) {
					break
				}
				require.NoError(t, err)
				fillMsg(p, seq)
				seq++
			}
			if err := w.Commit(); err != nil {
				require.ErrorIs(t, err, ring.ErrNotReserved)
			}
			for {
				rec, err := r.TryNext()
				if errors.Is(err, ring.ErrEmpty) {
					break
				}
				require.NoError(t, err)
				got, err := checkMsg(rec.Data, rec.Type)
				require.NoError(t, err)
				require.Equal(t, next, got)
				next++
			}
			r.Release()
		}
		assert.EqualValues(t, total, next)
		w.Close()
		r.Close()
	}
}

// TestMPMCCloseSkipsReservedAndLastCloseEnds: a writer closing with a slot reserved
// publishes it as a skip; the stream ends when the last writer closes, and a writer that
// attaches afterwards starts a new stream on the same ring.
func TestMPMCCloseSkipsReservedAndLastCloseEnds(t *testing.T) {
	seg := newMPMCSeg(t, 64, 64)
	w1, err := ring.NewMPMCWriter(seg, ring.Options{})
	require.NoError(t, err)
	w2, err := ring.NewMPMCWriter(seg, ring.Options{})
	require.NoError(t, err)
	r, err := ring.NewMPMCReader(seg, ring.Options{Wait: ring.Futex()})
	require.NoError(t, err)
	defer r.Close()

	_, err = w1.TryReserve(1, 8) // reserved, never committed
	require.NoError(t, err)
	require.NoError(t, w2.TryWrite(2, []byte("after")))
	require.NoError(t, w1.Close()) // publishes the reservation as a skip; w2 still open
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec, err := r.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "after", string(rec.Data))
	r.Release()
	_, err = r.TryNext()
	assert.ErrorIs(t, err, ring.ErrEmpty, "one writer is still open: not the end")

	require.NoError(t, w2.TryWrite(3, []byte("last")))
	require.NoError(t, w2.Close())
	rec, err = r.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "last", string(rec.Data))
	r.Release()
	_, err = r.Next(ctx)
	assert.Equal(t, ring.ErrEndOfStream, err)
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.Equal(t, ring.WriterEnded, st.WriterState)
	assert.EqualValues(t, 1, st.Writers.Drops)

	w3, err := ring.NewMPMCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w3.Close()
	require.NoError(t, w3.TryWrite(4, []byte("new stream")))
	rec, err = r.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "new stream", string(rec.Data))
	r.Release()
}

// TestMPMCReaderClosesWithBorrow: a reader closing with a record borrowed leaves it for
// another reader (at-least-once), which adopts it once it finds the ring empty.
func TestMPMCReaderClosesWithBorrow(t *testing.T) {
	seg := newMPMCSeg(t, 64, 64)
	w, err := ring.NewMPMCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	r1, err := ring.NewMPMCReader(seg, ring.Options{})
	require.NoError(t, err)
	require.NoError(t, w.TryWrite(1, []byte("borrowed")))
	require.NoError(t, w.TryWrite(2, []byte("next")))
	rec, err := r1.TryNext()
	require.NoError(t, err)
	require.Equal(t, "borrowed", string(rec.Data))
	require.NoError(t, r1.Close())
	r1.Release() // unpins; publishes nothing after Close

	r2, err := ring.NewMPMCReader(seg, ring.Options{Wait: ring.Futex()})
	require.NoError(t, err)
	defer r2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	for range 2 {
		rec, err := r2.Next(ctx)
		require.NoError(t, err)
		got = append(got, string(rec.Data))
		r2.Release()
	}
	assert.ElementsMatch(t, []string{"borrowed", "next"}, got)
}
