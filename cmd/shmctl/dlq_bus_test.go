package main

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/bus"
	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/shm"
)

// `shmctl dlq BUS.dlq replay` puts a bus's dead letters back into the queue of the
// subscription that failed them, from attempt 1.
func TestDLQReplayOfABus(t *testing.T) {
	dir := testDir(t)
	b, err := bus.Open("orders", bus.Config{Dir: dir, Source: "test", LaneSlots: 64, QueueSlots: 16, MaxEvent: 240})
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, bus.Register(b, "note", codec.Codec[string](codec.String{})))
	var failing atomic.Bool
	failing.Store(true)
	got := make(chan uint32, 10)
	_, err = bus.Subscribe(b, func(ctx context.Context, ev *envelope.View, v *string) error {
		if failing.Load() {
			return errors.New("billing is down")
		}
		got <- ev.Attempt
		return nil
	}, bus.Delivery(bus.Reliable{Name: "billing"}), bus.WithRetry(bus.Retry{MaxAttempts: 1, Factor: 1}))
	require.NoError(t, err)
	for _, s := range []string{"a", "b"} {
		_, err := bus.Publish(context.Background(), b, &s)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		dl, err := bus.DeadLetters("orders", shm.Options{Dir: dir})
		return err == nil && len(dl) == 2
	}, 30*time.Second, 10*time.Millisecond)

	stdout, stderr, status := shmctl(t, dir, "dlq", "orders.dlq", "list")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stdout, "orders.q.billing.normal")
	assert.Contains(t, stdout, "billing is down")

	failing.Store(false)
	stdout, stderr, status = shmctl(t, dir, "dlq", "orders.dlq", "replay")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stdout, "replayed 2 entries from orders.dlq to the queues of bus orders")
	for range 2 {
		select {
		case a := <-got:
			assert.Equal(t, uint32(1), a)
		case <-time.After(30 * time.Second):
			t.Fatal("a replayed event was not delivered")
		}
	}
	stdout, _, status = shmctl(t, dir, "dlq", "orders.dlq", "list")
	require.Equal(t, 0, status)
	assert.Contains(t, stdout, "0 entries")
}
