package bridge_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/bridge"
	"github.com/shmq/shmq/bus"
	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/envelope"
)

type order struct {
	N     uint64
	Price int64
}

func openBus(t *testing.T, dir, source string) *bus.Bus {
	b, err := bus.Open("plant", bus.Config{Dir: dir, Source: source})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	f, err := codec.NewFixed[order]()
	require.NoError(t, err)
	require.NoError(t, bus.Register(b, "test.Order", codec.Codec[order](f)))
	return b
}

// TestTwoBuses joins the buses of two hosts through reliable bus routes: a Reliable
// subscriber on one host handles every event published on the other once, with the
// envelope the publisher made, and nothing comes back.
func TestTwoBuses(t *testing.T) {
	ns := startNATS(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	route := bridge.BusRoute{Bus: "plant", Out: true, In: true, Reliable: true}
	cfg := func(name, dir string) bridge.Config {
		return bridge.Config{Name: name, URL: ns.url(), Dir: dir, Buses: []bridge.BusRoute{route}, RetryWait: 50 * time.Millisecond, AckWait: time.Second}
	}
	busA, busB := openBus(t, dirA, "shop"), openBus(t, dirB, "warehouse")

	var mu sync.Mutex
	got := map[uuid.UUID]envelope.Header{}
	copies := map[uuid.UUID]int{}
	subB, err := bus.Subscribe(busB, func(_ context.Context, ev *envelope.View, o *order) error {
		mu.Lock()
		defer mu.Unlock()
		h := ev.Header()
		h.Meta = append(h.Meta, envelope.KV{Key: "n", Value: fmt.Sprint(o.N)})
		got[ev.ID] = h
		copies[ev.ID]++
		return nil
	}, bus.Delivery(bus.Reliable{Name: "audit", Timeout: 10 * time.Second}))
	require.NoError(t, err)
	defer subB.Close()
	var backAtA int
	subA, err := bus.Subscribe(busA, func(_ context.Context, ev *envelope.View, _ *order) error {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := ev.Meta(bridge.OriginKey); ok {
			backAtA++
		}
		return nil
	}, bus.Delivery(bus.Reliable{Name: "local", Timeout: 10 * time.Second}))
	require.NoError(t, err)
	defer subA.Close()

	startBridge(t, cfg("a", dirA))
	startBridge(t, cfg("b", dirB))
	// The bridges subscribe to the buses as they start: wait until an event gets across.
	// Probes published before bridge a subscribed never reach it, so only the events
	// published after one got across must all arrive.
	probes := map[uuid.UUID]bool{}
	ctx := context.Background()
	require.Eventually(t, func() bool {
		id, err := bus.Publish(ctx, busA, &order{N: 0}, bus.WithPriority(envelope.Critical))
		require.NoError(t, err)
		probes[id] = true
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0
	}, 30*time.Second, time.Millisecond)
	sent := map[uuid.UUID]bool{}
	for i := 1; i <= 500; i++ {
		id, err := bus.Publish(ctx, busA, &order{N: uint64(i), Price: int64(i) * 10}, bus.WithCorrelation(fmt.Sprint("c", i)),
			bus.WithMeta(envelope.KV{Key: "k", Value: "v"}))
		require.NoError(t, err)
		sent[id] = true
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id := range sent {
			if copies[id] == 0 {
				return false
			}
		}
		return true
	}, time.Minute, 10*time.Millisecond, "events did not all reach b's bus")
	time.Sleep(500 * time.Millisecond) // a copy or an echo would arrive meanwhile
	mu.Lock()
	defer mu.Unlock()
	for id := range sent {
		require.Equal(t, 1, copies[id], "copies of %v", id)
		h := got[id]
		require.Equal(t, "test.Order", h.Type)
		require.Equal(t, "shop", h.Source)
		require.Equal(t, id, h.ID)
		n := h.Meta[len(h.Meta)-1].Value
		require.Equal(t, "c"+n, h.Correlation)
		require.Equal(t, []envelope.KV{{Key: "k", Value: "v"}, {Key: bridge.OriginKey, Value: "a"}, {Key: "n", Value: n}}, h.Meta)
	}
	require.Zero(t, backAtA, "events came back to a from NATS")
	for id := range got {
		require.True(t, sent[id] || probes[id], "an event nobody published arrived: %v", id)
		require.Equal(t, 1, copies[id], "copies of %v", id)
	}
}
