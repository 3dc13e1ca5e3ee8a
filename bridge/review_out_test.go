package bridge

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

// runReview runs a bridge in this process until the test ends.
func runReview(t *testing.T, cfg Config) *Bridge {
	t.Helper()
	b, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return after its context ended")
		}
		b.Close()
	})
	return b
}

func reviewEvent(t *testing.T, payload string) []byte {
	h, err := envelope.NewHeader("test.T", "src")
	require.NoError(t, err)
	rec, err := h.Append(nil, []byte(payload))
	require.NoError(t, err)
	return rec
}

// A record larger than the server's max_payload can never be published: on a reliable route
// it used to be retried forever, and everything after it waited with it.
func TestReviewReliableOversizedMessageDoesNotStallRoute(t *testing.T) {
	s, nc := reviewNATS(t, func(o *server.Options) { o.MaxPayload = 1024 })
	dir := t.TempDir()
	tp, err := topic.Open("orders", topic.Config{Policy: ring.Block, Slots: 64, MaxMessage: 4096}, shm.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { tp.Close() })
	sub, err := nc.SubscribeSync("shmq.orders")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	b := runReview(t, Config{Name: "a", URL: s.ClientURL(), Dir: dir, RetryWait: 20 * time.Millisecond,
		AckTimeout: time.Second, Out: []Route{{Topic: "orders", Reliable: true}}})

	pub, err := tp.Publisher(ring.Options{})
	require.NoError(t, err)
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, pub.Write(ctx, 1, reviewEvent(t, strings.Repeat("x", 2000))))
	require.NoError(t, pub.Write(ctx, 1, reviewEvent(t, "small")))

	m, err := sub.NextMsg(20 * time.Second)
	require.NoError(t, err, "the message after the oversized one is forwarded")
	assert.Equal(t, "small", string(m.Data))
	key := RouteKey(true, Route{Topic: "orders"})
	assert.Eventually(t, func() bool {
		st := b.Stats()[key]
		return st.Dropped == 1 && st.Forwarded == 1
	}, 20*time.Second, 10*time.Millisecond, "one dropped, one forwarded")
	t.Logf("%+v", b.Stats()[key])
}

// A record that came from NATS is not forwarded, and counted as looped once: a reliable
// route that borrows it again for each retry of its batch counted it again each time.
func TestReviewLoopedCountedOncePerRecord(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	store := t.TempDir()
	s, _ := reviewNATS(t, func(o *server.Options) { o.Port, o.StoreDir = port, store })
	dir := t.TempDir()
	tp, err := topic.Open("orders", topic.Config{Policy: ring.Block, Slots: 64, MaxMessage: 1024}, shm.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { tp.Close() })
	b := runReview(t, Config{Name: "a", URL: s.ClientURL(), Dir: dir, RetryWait: 20 * time.Millisecond,
		AckTimeout: 200 * time.Millisecond, Out: []Route{{Topic: "orders", Reliable: true}}})
	key := RouteKey(true, Route{Topic: "orders"})

	pub, err := tp.Publisher(ring.Options{})
	require.NoError(t, err)
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, pub.Write(ctx, 1, reviewEvent(t, "first")))
	require.Eventually(t, func() bool { return b.Stats()[key].Forwarded == 1 }, 20*time.Second, 10*time.Millisecond)

	s.Shutdown()
	s.WaitForShutdown()
	h, err := envelope.NewHeader("test.T", "src")
	require.NoError(t, err)
	h.Meta = []envelope.KV{{Key: OriginKey, Value: "b"}}
	looped, err := h.Append(nil, []byte("from NATS"))
	require.NoError(t, err)
	require.NoError(t, pub.Write(ctx, 1, looped))
	require.NoError(t, pub.Write(ctx, 1, reviewEvent(t, "second")))
	require.Eventually(t, func() bool { return b.Stats()[key].Retried >= 3 }, 20*time.Second, 10*time.Millisecond)

	s2, _ := reviewNATS(t, func(o *server.Options) { o.Port, o.StoreDir = port, store })
	_ = s2
	require.Eventually(t, func() bool { return b.Stats()[key].Forwarded == 2 }, 30*time.Second, 10*time.Millisecond)
	st := b.Stats()[key]
	t.Logf("%+v", st)
	assert.Equal(t, uint64(1), st.Looped)
}

// While NATS is down a reliable route retries its batch; its durable subscription must keep
// holding back the publishers of a Block topic all the while. It used to close the
// subscription and pause RetryWait before subscribing again: a durable subscription without
// a holder holds nobody back, so publishers overwrote the records it had not forwarded, and
// they were lost (counted as dropped).
func TestReviewReliableRetryKeepsHoldingPublishers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	store := t.TempDir()
	s, nc := reviewNATS(t, func(o *server.Options) { o.Port, o.StoreDir = port, store })
	dir := t.TempDir()
	const slots, window = 16, 4
	tp, err := topic.Open("orders", topic.Config{Policy: ring.Block, Slots: slots, MaxMessage: 1024}, shm.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { tp.Close() })
	b := runReview(t, Config{Name: "a", URL: s.ClientURL(), Dir: dir, RetryWait: 300 * time.Millisecond,
		AckTimeout: 100 * time.Millisecond, Window: window, Out: []Route{{Topic: "orders", Reliable: true}}})
	key := RouteKey(true, Route{Topic: "orders"})
	sub, err := nc.SubscribeSync("shmq.orders")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	pub, err := tp.Publisher(ring.Options{})
	require.NoError(t, err)
	defer pub.Close()
	written := 0
	write := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		err := pub.Write(ctx, 1, reviewEvent(t, fmt.Sprint(written)))
		if err == nil {
			written++
		}
		return err
	}
	require.NoError(t, write(10*time.Second))
	require.Eventually(t, func() bool { return b.Stats()[key].Forwarded == 1 }, 20*time.Second, 10*time.Millisecond)
	_, err = sub.NextMsg(10 * time.Second)
	require.NoError(t, err)
	nc.Close()

	s.Shutdown()
	s.WaitForShutdown()
	// For 3 s (ten retries), write whatever the topic takes.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		_ = write(50 * time.Millisecond)
	}
	assert.LessOrEqual(t, written, 1+slots+window, "publishers of a full Block topic wait while the bridge cannot forward")
	assert.GreaterOrEqual(t, b.Stats()[key].Retried, uint64(2))

	s2, nc2 := reviewNATS(t, func(o *server.Options) { o.Port, o.StoreDir = port, store })
	_ = s2
	js, err := jetstream.New(nc2)
	require.NoError(t, err)
	assert.Eventually(t, func() bool {
		st, err := js.Stream(context.Background(), "SHMQ")
		if err != nil {
			return false
		}
		info, err := st.Info(context.Background())
		return err == nil && info.State.Msgs == uint64(written)
	}, 30*time.Second, 20*time.Millisecond, "JetStream gets every one of the %d messages written", written)
	st := b.Stats()[key]
	t.Logf("written %d, %+v", written, st)
	assert.Zero(t, st.Dropped)
}
