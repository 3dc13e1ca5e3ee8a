package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/bus"
	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/envelope"
)

func TestHealth(t *testing.T) {
	dir := testDir(t)
	b, err := bus.Open("orders", bus.Config{Dir: dir, Source: "test", LaneSlots: 64, QueueSlots: 16, MaxEvent: 240})
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, bus.Register(b, "note", codec.Codec[string](codec.String{})))
	sub, err := bus.Subscribe(b, func(ctx context.Context, ev *envelope.View, v *string) error { return nil },
		bus.Delivery(bus.Reliable{Name: "billing"}))
	require.NoError(t, err)

	stdout, stderr, status := shmctl(t, dir, "health", "orders")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stdout, "bus orders: healthy")
	assert.Contains(t, stdout, "billing")

	// No worker left, events waiting: unhealthy, exit status 1.
	require.NoError(t, sub.Close())
	s := "hello"
	_, err = bus.Publish(context.Background(), b, &s)
	require.NoError(t, err)
	stdout, stderr, status = shmctl(t, dir, "health", "orders", "--json")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
	var h bus.Health
	require.NoError(t, json.Unmarshal([]byte(stdout), &h))
	assert.Equal(t, bus.Unhealthy, h.State)
	require.Len(t, h.Queues, 1)
	assert.Equal(t, uint64(1), h.Queues[0].Depth)
	assert.Equal(t, "no_worker", h.Reasons[0].Check)

	_, stderr, status = shmctl(t, dir, "health", "nosuchbus")
	assert.Equal(t, 1, status)
	assert.Contains(t, stderr, "health nosuchbus")
	_, _, status = shmctl(t, dir, "health")
	assert.Equal(t, 2, status)
}
