package topic_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

func testOpts(t *testing.T) shm.Options {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	d, err := os.MkdirTemp(base, "topic-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return shm.Options{Dir: d}
}

func TestOpenSameAndMismatch(t *testing.T) {
	opts := testOpts(t)
	cfg := topic.Config{Policy: ring.Block, Slots: 64, MaxMessage: 100}
	a, err := topic.Open("orders", cfg, opts)
	require.NoError(t, err)
	defer a.Close()
	b, err := topic.Open("orders", cfg, opts)
	require.NoError(t, err, "a second opener with the same configuration joins")
	defer b.Close()
	assert.Equal(t, ring.Block, b.Policy())
	assert.Equal(t, 112, b.MaxMessage(), "100 bytes round up to 128-byte slots")

	_, err = topic.Open("orders", topic.Config{Policy: ring.Overwrite, Slots: 64, MaxMessage: 100}, opts)
	assert.ErrorIs(t, err, topic.ErrMismatch)
	assert.ErrorIs(t, err, shm.ErrMismatch)
	assert.Contains(t, err.Error(), "orders is block with 64 slots of 128 bytes, asked for overwrite with 64 slots of 128 bytes")

	seg, err := ring.Create("plain", ring.Spec{Kind: ring.SPSC, Size: 4096}, opts)
	require.NoError(t, err)
	defer seg.Close()
	_, err = topic.Open("plain", cfg, opts)
	assert.ErrorIs(t, err, ring.ErrKind)
	_, err = topic.Join(context.Background(), "plain", opts)
	assert.ErrorIs(t, err, ring.ErrKind)

	_, err = topic.Open("x", topic.Config{Policy: ring.Block, Slots: 3}, opts)
	assert.ErrorIs(t, err, shm.ErrInvalidSpec)
	_, err = topic.Open("x", topic.Config{Slots: 4}, opts)
	assert.ErrorIs(t, err, shm.ErrInvalidSpec, "a policy is required")
	_, err = topic.Open("bad/name", cfg, opts)
	assert.ErrorIs(t, err, shm.ErrInvalidName)
}

func TestJoinWaitsForCreation(t *testing.T) {
	opts := testOpts(t)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tp, err := topic.Join(ctx, "late", opts)
		if err == nil {
			tp.Close()
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	tp, err := topic.Open("late", topic.Config{Policy: ring.Latest, Slots: 4}, opts)
	require.NoError(t, err)
	defer tp.Close()
	require.NoError(t, <-done)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = topic.Join(ctx, "never", opts)
	assert.ErrorIs(t, err, shm.ErrNotExist)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestList(t *testing.T) {
	opts := testOpts(t)
	a, err := topic.Open("a", topic.Config{Policy: ring.Overwrite, Slots: 16}, opts)
	require.NoError(t, err)
	defer a.Close()
	b, err := topic.Open("b", topic.Config{Policy: ring.Block, Slots: 8, MaxMessage: 1000}, opts)
	require.NoError(t, err)
	defer b.Close()
	seg, err := ring.Create("not-a-topic", ring.Spec{Kind: ring.SPSC, Size: 4096}, opts)
	require.NoError(t, err)
	defer seg.Close()
	require.NoError(t, os.WriteFile(opts.Dir+"/junk", []byte("hello"), 0o600))

	p, err := a.Publisher(ring.Options{})
	require.NoError(t, err)
	for range 3 {
		_, err := a.Subscribe(context.Background(), ring.SubscribeOptions{})
		require.NoError(t, err)
	}
	_, err = a.Subscribe(context.Background(), ring.SubscribeOptions{Name: "keep"})
	require.NoError(t, err)
	require.NoError(t, p.TryWrite(0, []byte("x")))

	infos, err := topic.List(opts)
	require.NoError(t, err)
	require.Len(t, infos, 2)
	assert.Equal(t, topic.Info{Name: "a", Policy: "overwrite", Slots: 16, MaxMessage: 240, Published: 1,
		Publishers: 1, Subscribers: 4, Subscriptions: 4}, infos[0])
	assert.Equal(t, topic.Info{Name: "b", Policy: "block", Slots: 8, MaxMessage: 1008}, infos[1])

	require.NoError(t, a.Close(), "closing the topic closes its endpoints")
	infos, err = topic.List(opts)
	require.NoError(t, err)
	assert.Equal(t, 0, infos[0].Publishers)
	assert.Equal(t, 0, infos[0].Subscribers)
	assert.Equal(t, 1, infos[0].Subscriptions, "the durable subscription stays without a holder")
}

// Quote is a fixed-layout message, read in place through codec.Fixed.
type Quote struct {
	Seq   uint64
	Bid   float64
	Ask   float64
	Check uint64 // Seq * 31: a torn read shows as a mismatch
}

// TestTypedOverTopic: codec's senders and receivers work on a topic unchanged, the
// zero-copy view included, and on an Overwrite topic Receive never hands over a value that
// was overwritten while it decoded it.
func TestTypedOverTopic(t *testing.T) {
	opts := testOpts(t)
	tp, err := topic.Open("quotes", topic.Config{Policy: ring.Overwrite, Slots: 8, MaxMessage: 32}, opts)
	require.NoError(t, err)
	defer tp.Close()
	pub, err := tp.Publisher(ring.Options{})
	require.NoError(t, err)
	fixed, err := codec.NewFixed[Quote]()
	require.NoError(t, err)
	const quoteID = 3
	subs := make([]*codec.Receiver[Quote], 2)
	for i := range subs {
		s, err := tp.Subscribe(context.Background(), ring.SubscribeOptions{})
		require.NoError(t, err)
		subs[i] = codec.NewReceiver(ring.Reader(s), quoteID, codec.Codec[Quote](fixed))
	}
	send := codec.NewSender(ring.Writer(pub), quoteID, codec.Codec[Quote](fixed))
	ctx := context.Background()
	for i := range uint64(5) {
		require.NoError(t, send.Send(ctx, &Quote{Seq: i, Bid: 1, Ask: 2, Check: i * 31}))
	}
	for _, r := range subs[:1] {
		for want := range uint64(5) {
			q, err := r.Next(ctx) // in place
			require.NoError(t, err)
			assert.Equal(t, want, q.Seq)
			assert.Equal(t, want*31, q.Check)
			require.NoError(t, r.Validate())
			r.Release()
		}
	}
	// subs[1] lags: 20 more make it miss everything but the last 8.
	for i := uint64(5); i < 25; i++ {
		require.NoError(t, send.Send(ctx, &Quote{Seq: i, Check: i * 31}))
	}
	var q Quote
	err = subs[1].Receive(ctx, &q)
	var lag *ring.LagError
	require.True(t, errors.As(err, &lag), "got %v", err)
	assert.EqualValues(t, 17, lag.Missed)
	require.NoError(t, subs[1].Receive(ctx, &q))
	assert.EqualValues(t, 17, q.Seq)
}
