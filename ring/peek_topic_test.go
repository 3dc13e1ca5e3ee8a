package ring_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// peekPayload is record seq's payload in the PeekTopic tests: every byte depends on seq, so
// a copy torn between two laps does not match its position.
func peekPayload(seq uint64, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(seq*131 + uint64(i))
	}
	return p
}

func inspect(t *testing.T, seg *shm.Segment) *shm.Segment {
	t.Helper()
	s, err := shm.Inspect(seg.Name(), shm.Options{Dir: seg.Dir()})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPeekTopic(t *testing.T) {
	seg := newTopicSeg(t, ring.Block, 16, 64)
	sub := subscribe(t, seg, ring.SubscribeOptions{})
	p := publisher(t, seg)
	for i := range 5 {
		require.NoError(t, p.TryWrite(uint32(100+i), peekPayload(uint64(i), 10+i)))
	}
	ro := inspect(t, seg)
	before, err := os.ReadFile(filepath.Join(seg.Dir(), seg.Name()))
	require.NoError(t, err)

	recs, err := ring.PeekTopic(ro, 0, 10, 64)
	require.NoError(t, err)
	require.Len(t, recs, 5)
	for i, r := range recs {
		assert.EqualValues(t, i, r.Position)
		assert.EqualValues(t, 100+i, r.Type)
		assert.Equal(t, 10+i, r.Length)
		assert.Equal(t, peekPayload(uint64(i), 10+i), r.Data)
	}
	recs, err = ring.PeekTopic(ro, 3, 10, 4)
	require.NoError(t, err)
	require.Len(t, recs, 2, "from 3 of 5")
	assert.EqualValues(t, 3, recs[0].Position)
	assert.Equal(t, 13, recs[0].Length, "the length is the record's, the data the preview")
	assert.Equal(t, peekPayload(3, 4), recs[0].Data)
	recs, err = ring.PeekTopic(ro, 0, 2, 0)
	require.NoError(t, err)
	require.Len(t, recs, 2, "at most n")
	assert.Empty(t, recs[1].Data)
	recs, err = ring.PeekTopic(ro, 5, 10, 8)
	require.NoError(t, err)
	assert.Empty(t, recs, "nothing published from 5 on")

	after, err := os.ReadFile(filepath.Join(seg.Dir(), seg.Name()))
	require.NoError(t, err)
	assert.Equal(t, before, after, "PeekTopic changed nothing")
	assert.EqualValues(t, 0, sub.Position(), "the subscriber consumed nothing")
	rec, err := sub.TryNext()
	require.NoError(t, err)
	assert.Equal(t, peekPayload(0, 10), rec.Data)
	sub.Release()
}

// TestPeekTopicOldest: records the ring no longer holds are not shown; a start before the
// oldest held starts there.
func TestPeekTopicOldest(t *testing.T) {
	seg := newTopicSeg(t, ring.Overwrite, 8, 64)
	p := publisher(t, seg)
	for i := range 20 {
		require.NoError(t, p.TryWrite(0, peekPayload(uint64(i), 8)))
	}
	recs, err := ring.PeekTopic(inspect(t, seg), 0, 100, 8)
	require.NoError(t, err)
	require.Len(t, recs, 8)
	for i, r := range recs {
		assert.EqualValues(t, 12+i, r.Position)
		assert.Equal(t, peekPayload(uint64(12+i), 8), r.Data)
	}
}

func TestPeekTopicKind(t *testing.T) {
	seg := newSegment(t, testDir(t), "q", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64})
	_, err := ring.PeekTopic(seg, 0, 1, 8)
	assert.ErrorIs(t, err, ring.ErrKind)
}

// TestPeekTopicWhileOverwritten: a publisher laps an Overwrite topic of 4 slots without a
// pause while PeekTopic copies whole records: every record returned is intact and at its
// position (copies torn by the publisher are passed over).
func TestPeekTopicWhileOverwritten(t *testing.T) {
	const size = 200
	seg := newTopicSeg(t, ring.Overwrite, 4, 1024)
	p := publisher(t, seg)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var published atomic.Uint64
	done := make(chan error, 1)
	go func() {
		for seq := uint64(0); ctx.Err() == nil; seq++ {
			buf, err := p.Reserve(ctx, uint32(seq), size)
			if err != nil {
				done <- err
				return
			}
			copy(buf, peekPayload(seq, size))
			if err := p.Commit(); err != nil {
				done <- err
				return
			}
			published.Store(seq + 1)
		}
		done <- nil
	}()
	ro := inspect(t, seg)
	seen := 0
	for ctx.Err() == nil {
		recs, err := ring.PeekTopic(ro, 0, 4, size)
		require.NoError(t, err)
		for _, r := range recs {
			require.Equal(t, size, r.Length)
			require.EqualValues(t, uint32(r.Position), r.Type)
			require.Equal(t, peekPayload(r.Position, size), r.Data, "record %d", r.Position)
		}
		seen += len(recs)
	}
	require.NoError(t, <-done)
	assert.Greater(t, published.Load(), uint64(4), "the publisher lapped the ring")
	assert.Positive(t, seen, "some records were copied intact")
}
