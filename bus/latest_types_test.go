package bus

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/envelope"
)

// Other is an event type a Tick subscription does not take.
type Other struct{ X uint64 }

// TestLatestOnlyConflatesOnlyItsTypes: a LatestOnly subscription counts as conflated only
// the events of its own types that a newer one replaced, not the other types sharing the
// lanes: every Tick is either delivered or conflated, and the Others are neither.
func TestLatestOnlyConflatesOnlyItsTypes(t *testing.T) {
	b := openTest(t, t.TempDir(), Config{Source: "pub"})
	f, err := codec.NewFixed[Other]()
	require.NoError(t, err)
	require.NoError(t, Register(b, "other", codec.Codec[Other](f)))

	release := make(chan struct{})
	var delivered atomic.Uint64
	last := make(chan struct{})
	sub, err := Subscribe(b, func(_ context.Context, _ *envelope.View, v *Tick) error {
		if delivered.Add(1) == 1 {
			<-release // busy while everything else is published
		}
		if v.Seq == 50 {
			close(last)
		}
		return nil
	}, Delivery(LatestOnly{}))
	require.NoError(t, err)
	defer sub.Close()

	ctx := context.Background()
	_, err = Publish(ctx, b, &Tick{Seq: 0})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return delivered.Load() == 1 }, 10*time.Second, time.Millisecond)
	for i := uint64(1); i <= 50; i++ {
		for range 4 {
			_, err = Publish(ctx, b, &Other{X: i})
			require.NoError(t, err)
		}
		_, err = Publish(ctx, b, &Tick{Seq: i})
		require.NoError(t, err)
	}
	close(release)
	select {
	case <-last:
	case <-time.After(10 * time.Second):
		t.Fatal("the newest Tick was not delivered")
	}
	st := sub.Stats()
	require.Zero(t, st.Dropped, "the lanes are large enough for no loss")
	require.Equal(t, uint64(51), delivered.Load()+st.Conflated, "delivered %d, conflated %d", delivered.Load(), st.Conflated)
}
