package dlq

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func TestRingSinkReplaysToOrigin(t *testing.T) {
	q, opts := newQueue(t, Config{Capacity: 8})
	seg, err := ring.Create("orders.q", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 128}, opts)
	require.NoError(t, err)
	defer seg.Close()
	r, err := ring.NewMPMCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()

	for i := range 3 {
		require.NoError(t, q.Put(Entry{Origin: "orders.q", Type: uint32(10 + i), Data: []byte{byte(i), 1, 2}}))
	}
	require.NoError(t, q.Put(Entry{Origin: "gone.q", Type: 1, Data: []byte("x")}))
	require.NoError(t, q.Put(Entry{Type: 1, Data: []byte("no origin")}))

	sink := NewRingSink(opts, ring.Options{})
	sink.Timeout = 100 * time.Millisecond
	defer sink.Close()
	n, err := q.Replay(context.Background(), sink.Write)
	assert.Equal(t, 3, n)
	assert.ErrorIs(t, err, shm.ErrNotExist, "the fourth entry's ring does not exist")
	for i := range 3 {
		buf := make([]byte, 16)
		k, typ, err := r.TryRead(buf)
		require.NoError(t, err)
		assert.Equal(t, uint32(10+i), typ)
		assert.Equal(t, []byte{byte(i), 1, 2}, buf[:k])
	}
	list, err := q.List()
	require.NoError(t, err)
	require.Len(t, list, 2, "entries that could not be replayed stay")
	assert.Equal(t, "gone.q", list[0].Origin)

	require.NoError(t, q.Take(func(Entry) error { return nil })) // drop gone.q's
	assert.ErrorIs(t, q.Take(sink.Write), ErrNoOrigin)
	require.NoError(t, sink.Close())
	require.NoError(t, sink.Close())
	assert.ErrorIs(t, sink.Write(Entry{Origin: "orders.q"}), ErrClosed)
}
