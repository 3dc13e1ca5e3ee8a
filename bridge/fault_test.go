package bridge_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/bridge"
	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

// TestBestEffortNeverBlocksPublishers stops NATS under a best-effort route on a Block topic,
// where the bridge's subscriber gates the publishers: local publishers go on at full speed
// while NATS is gone, and the bridge forwards again by itself when it is back.
func TestBestEffortNeverBlocksPublishers(t *testing.T) {
	ns := startNATS(t)
	dir := t.TempDir()
	tp, err := topic.Open("ticks", topic.Config{Policy: ring.Block, Slots: 256}, shm.Options{Dir: dir})
	require.NoError(t, err)
	defer tp.Close()
	p := startBridge(t, bridge.Config{Name: "be", URL: ns.url(), Dir: dir, RetryWait: 20 * time.Millisecond,
		Out: []bridge.Route{{Topic: "ticks"}}})

	nc, err := nats.Connect(ns.url(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	require.NoError(t, err)
	defer nc.Close()
	got := make(chan *nats.Msg, 1<<16)
	_, err = nc.ChanSubscribe("shmq.ticks", got)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	pub, err := tp.Publisher(ring.Options{})
	require.NoError(t, err)
	defer pub.Close()
	written := uint64(0)
	// Wait until the route is live: a message published now reaches NATS.
	require.Eventually(t, func() bool {
		require.NoError(t, pub.Write(context.Background(), 1, []byte("probe")))
		written++
		select {
		case <-got:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	}, 30*time.Second, time.Millisecond)
	probes := written

	ns.s.Shutdown()
	ns.s.WaitForShutdown()
	// 100,000 messages through a 256-slot Block topic: only a bridge that keeps reading while
	// NATS is gone lets them through. Each write has 10 s: a bridge that waited for NATS would
	// hold them until it is back; a loaded machine delays them by far less.
	for i := range 100_000 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := pub.Write(ctx, 1, fmt.Appendf(nil, "tick %d", i))
		cancel()
		require.NoError(t, err, "write %d blocked while NATS was down", i)
		written++
	}

	ns.start()
	require.Eventually(t, func() bool {
		require.NoError(t, pub.Write(context.Background(), 1, []byte("after")))
		written++
		for {
			select {
			case m := <-got:
				if string(m.Data) == "after" {
					return true
				}
			case <-time.After(20 * time.Millisecond):
				return false
			}
		}
	}, time.Minute, time.Millisecond, "the bridge did not forward again after NATS came back")

	require.NoError(t, syscall.Kill(p.Pid(), syscall.SIGTERM)) // stop it and read its counters
	var st map[string]bridge.Stats
	require.NoError(t, p.Result(0, &st, 30*time.Second))
	s := st[bridge.RouteKey(true, bridge.Route{Topic: "ticks"})]
	// Probes written before the bridge subscribed are not its to count; everything after is.
	require.LessOrEqual(t, written-probes, s.Forwarded+s.Dropped, "every message counted as forwarded or dropped: %+v", s)
	require.LessOrEqual(t, s.Forwarded+s.Dropped, written, "%+v", s)
}

// TestReliableNATSDown stops NATS under a reliable route: once the topic is full, local
// publishers get their context's error (the documented back-pressure), and when NATS is
// back every message they wrote reaches JetStream, once.
func TestReliableNATSDown(t *testing.T) {
	ns := startNATS(t)
	dir := t.TempDir()
	tp, err := topic.Open("orders", topic.Config{Policy: ring.Block, Slots: 512}, shm.Options{Dir: dir})
	require.NoError(t, err)
	defer tp.Close()
	startBridge(t, bridge.Config{Name: "rel", URL: ns.url(), Dir: dir, RetryWait: 20 * time.Millisecond,
		AckTimeout: 500 * time.Millisecond, Window: 64, Out: []bridge.Route{{Topic: "orders", Reliable: true}}})
	pub, err := tp.Publisher(ring.Options{})
	require.NoError(t, err)
	defer pub.Close()
	written := 0
	write := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		err := publish(ctx, pub, event(t, written), []byte("x"))
		if err == nil {
			written++
		}
		return err
	}
	require.NoError(t, write(time.Second))
	require.Eventually(t, func() bool { return streamMsgs(t, ns.url()) == 1 }, 30*time.Second, 10*time.Millisecond)

	ns.s.Shutdown()
	ns.s.WaitForShutdown()
	var err2 error
	for range 5000 {
		if err2 = write(200 * time.Millisecond); err2 != nil {
			break
		}
	}
	require.ErrorIs(t, err2, context.DeadlineExceeded, "a publisher of a full topic whose bridge cannot reach NATS")
	require.Greater(t, written, 512, "the topic held its slots and the bridge its window")

	ns.start()
	require.Eventually(t, func() bool { return streamMsgs(t, ns.url()) == uint64(written) }, time.Minute, 50*time.Millisecond,
		"JetStream did not get the %d messages written", written)
	require.NoError(t, write(time.Minute), "the topic did not drain after NATS came back")
	require.Eventually(t, func() bool { return streamMsgs(t, ns.url()) == uint64(written) }, time.Minute, 50*time.Millisecond)
}

// TestCountersInSharedMemory reads a bridge's counters from another process's view of the
// segments (metrics.Read, as shmctl and the Prometheus collector do).
func TestCountersInSharedMemory(t *testing.T) {
	ns := startNATS(t)
	a, b := newHost(t, "a"), newHost(t, "b")
	atB := collect(t, b)
	pa := startBridge(t, a.config(ns.url()))
	startBridge(t, b.config(ns.url()))
	pub, err := a.t.Publisher(ring.Options{})
	require.NoError(t, err)
	defer pub.Close()
	for i := range 100 {
		require.NoError(t, publish(context.Background(), pub, event(t, i), []byte("x")))
	}
	atB.wait(t, 100, time.Minute)
	read := func(dir, bridgeName, counter, direction string) uint64 {
		snap, err := metrics.Read(bridge.CountersName(topicName, bridgeName), shm.Options{Dir: dir})
		require.NoError(t, err)
		s, ok := snap.Find(counter, metrics.Label{Key: "direction", Value: direction}, metrics.Label{Key: "subject", Value: "shmq." + topicName})
		require.True(t, ok, "%s{direction=%s}", counter, direction)
		return s.Counter
	}
	require.Eventually(t, func() bool { return read(a.dir, "a", "shmq_bridge_forwarded_total", "out") == 100 }, 30*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return read(b.dir, "b", "shmq_bridge_received_total", "in") == 100 }, 30*time.Second, 10*time.Millisecond)
	// b's outbound route saw the 100 come in from NATS and did not send them back.
	require.Eventually(t, func() bool { return read(b.dir, "b", "shmq_bridge_looped_total", "out") == 100 }, 30*time.Second, 10*time.Millisecond)
	require.Zero(t, read(b.dir, "b", "shmq_bridge_forwarded_total", "out"))
	// The counters outlive the bridge process.
	pa.Kill()
	require.EqualValues(t, 100, read(a.dir, "a", "shmq_bridge_forwarded_total", "out"))
}
