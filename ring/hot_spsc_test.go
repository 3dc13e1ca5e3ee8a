package ring_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
)

// TestHotSPSCReserveBatchRuns: ReserveBatch reserves runs of records with one room check
// each; runs end at the end of the data region (the next record is padded there) and where
// the reader's position stops them. Every record must arrive once, in order, intact, with
// the ring's counters in step, across the wrap of the region and of the 64-bit positions.
func TestHotSPSCReserveBatchRuns(t *testing.T) {
	for _, start := range []uint64{0, ^uint64(0) - 3000} {
		seg := newSegment(t, testDir(t), "x", ring.Spec{Kind: ring.SPSC, Size: 4096})
		ring.SetPositions(seg, start)
		w, err := ring.NewSPSCWriter(seg, ring.Options{})
		require.NoError(t, err)
		r, err := ring.NewSPSCReader(seg, ring.Options{})
		require.NoError(t, err)
		ctx := context.Background()
		var recs [][]byte
		var sent, got uint64
		check := func(rec ring.Record) error {
			seq, err := checkMsg(rec.Data, rec.Type)
			if err == nil && seq != got {
				t.Fatalf("got message %d, want %d", seq, got)
			}
			got++
			return err
		}
		for round := 0; round < 400; round++ {
			n := msgHeader + round%53*8 + round%5 // varied sizes, unaligned ones too
			count := 1 + round%37
			for !w.Ready(n) { // ReserveBatch would wait for this goroutine's own Drain
				_, err := r.Drain(ctx, check, 3)
				require.NoError(t, err)
			}
			recs, err = w.ReserveBatch(ctx, batchType, n, count, recs[:0])
			require.NoError(t, err)
			require.NotEmpty(t, recs)
			require.LessOrEqual(t, len(recs), count)
			for _, p := range recs {
				require.Len(t, p, n)
				fillMsg(p, sent)
				sent++
			}
			require.NoError(t, w.Commit())
			if round%3 == 0 {
				continue // let the ring fill up, so that runs end at the reader's position
			}
			for got < sent {
				_, err := r.Drain(ctx, check, 1+round%7)
				require.NoError(t, err)
			}
		}
		for got < sent {
			_, err := r.Drain(ctx, check, 0)
			require.NoError(t, err)
		}
		st, err := ring.ReadStats(seg)
		require.NoError(t, err)
		assert.Equal(t, sent, st.Writers.Messages)
		assert.Equal(t, sent, st.Readers.Messages)
		assert.Equal(t, st.Writers.Bytes, st.Readers.Bytes)
		w.Close()
		r.Close()
	}
}

// TestHotSPSCCachedWritePosition: the reader checks the writer's position once, when it
// loads it, and reads the records behind it without loading it again. Records published
// before the position went bad are still delivered; then the impossible position is
// ErrCorrupt from TryNext, Drain and Next alike (never a panic), every time it is loaded,
// and a good position again reads on.
func TestHotSPSCCachedWritePosition(t *testing.T) {
	seg, w, r := newSPSC(t, 4096, ring.Options{})
	require.NoError(t, w.TryWrite(1, []byte("one")))
	require.NoError(t, w.TryWrite(2, []byte("two")))
	rec, err := r.TryNext() // loads the position past both records
	require.NoError(t, err)
	assert.Equal(t, "one", string(rec.Data))
	r.Release()

	ring.SetWritePos(seg, 1<<40)
	rec, err = r.TryNext()
	require.NoError(t, err, "a record behind the checked position")
	assert.Equal(t, "two", string(rec.Data))
	r.Release()
	for i := 0; i < 2; i++ {
		_, err = r.TryNext()
		assert.ErrorIs(t, err, ring.ErrCorrupt)
		n, err := r.Drain(context.Background(), func(ring.Record) error { return nil }, 0)
		assert.ErrorIs(t, err, ring.ErrCorrupt)
		assert.Zero(t, n)
		_, err = r.Next(context.Background())
		assert.ErrorIs(t, err, ring.ErrCorrupt)
		assert.True(t, r.Ready(), "a corrupt ring makes Next return at once")
	}

	ring.SetWritePos(seg, 44) // not a multiple of 8
	_, err = r.TryNext()
	assert.ErrorIs(t, err, ring.ErrCorrupt)

	// The writer's own position, published again: readable once more.
	require.NoError(t, w.TryWrite(3, []byte("three")))
	rec, err = r.TryNext()
	require.NoError(t, err)
	assert.Equal(t, "three", string(rec.Data))
	r.Release()
	_, err = r.TryNext()
	assert.ErrorIs(t, err, ring.ErrEmpty)
}

// TestHotSPSCDrainCorruptHeader: a record header no writer writes, met in the middle of a
// Drain, ends it with ErrCorrupt after the records before it, which are released.
func TestHotSPSCDrainCorruptHeader(t *testing.T) {
	seg, w, r := newSPSC(t, 4096, ring.Options{})
	for i := 0; i < 3; i++ {
		require.NoError(t, w.TryWrite(uint32(i), []byte("abcdefgh")))
	}
	seg.Data()[2*16] = 0xFF // the third record's length: 0xFF, past the write position
	var seen []uint32
	n, err := r.Drain(context.Background(), func(rec ring.Record) error {
		seen = append(seen, rec.Type)
		return nil
	}, 0)
	assert.ErrorIs(t, err, ring.ErrCorrupt)
	assert.Equal(t, 2, n)
	assert.Equal(t, []uint32{0, 1}, seen)
	_, err = r.TryNext()
	assert.ErrorIs(t, err, ring.ErrCorrupt, "the bad record is not skipped")
}
