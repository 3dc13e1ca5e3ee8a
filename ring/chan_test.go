package ring_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
)

func TestMessagesChannel(t *testing.T) {
	dir := testDir(t)
	seg := newSegment(t, dir, "ch", ring.Spec{Kind: ring.SPSC, Size: 4096})
	r, err := ring.NewSPSCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	w, err := ring.NewSPSCWriter(seg, ring.Options{})
	require.NoError(t, err)
	ch, errf := ring.Messages(context.Background(), r, 4)
	for i := range 100 {
		require.NoError(t, w.Write(context.Background(), uint32(i), []byte{byte(i)}))
	}
	require.NoError(t, w.Close())
	for i := 0; ; i++ {
		select {
		case m, ok := <-ch:
			if !ok {
				assert.Equal(t, 100, i)
				assert.ErrorIs(t, errf(), io.EOF, "the stream ended")
				return
			}
			assert.EqualValues(t, i, m.Type)
			assert.Equal(t, []byte{byte(i)}, m.Data)
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d never came", i)
		}
	}
}

func TestMessagesChannelContext(t *testing.T) {
	dir := testDir(t)
	seg := newSegment(t, dir, "ch", ring.Spec{Kind: ring.Topic, Size: 4096, SlotSize: 64, Policy: ring.Block})
	s, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{})
	require.NoError(t, err)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ch, errf := ring.Messages(ctx, s, 0)
	cancel()
	select {
	case _, ok := <-ch:
		assert.False(t, ok)
	case <-time.After(10 * time.Second):
		t.Fatal("the channel stayed open after ctx ended")
	}
	assert.ErrorIs(t, errf(), context.Canceled)
}
