package bridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/bridge"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

const (
	envConfig = "SHMQ_BRIDGE_TEST_CONFIG"
	envKill   = "SHMQ_BRIDGE_TEST_KILL"
)

func TestMain(m *testing.M) {
	proctest.Register("bridge", runBridge)
	proctest.Main(m)
}

// runBridge is a bridge process: it runs the Config in its environment until SIGTERM.
func runBridge(c *proctest.Child) error {
	var cfg bridge.Config
	if err := json.Unmarshal([]byte(os.Getenv(envConfig)), &cfg); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	b, err := bridge.New(cfg)
	if err != nil {
		return err
	}
	// SHMQ_BRIDGE_TEST_KILL=written:N or acked:N: report the point at the N-th time there;
	// the parent starts the child with KillAt set to that point, so it dies exactly there.
	var point string
	var at int
	fmt.Sscanf(os.Getenv(envKill), "%s %d", &point, &at)
	hook := func(name string) func() {
		if point != name {
			return nil
		}
		n := 0
		return func() {
			if n++; n == at {
				c.Point(name)
			}
		}
	}
	defer b.Close()
	bridge.SetTestHooks(hook("written"), hook("acked"))
	c.Point("started")
	err = b.Run(ctx)
	_ = c.Result(b.Stats())
	return err
}

// natsServer is an embedded NATS server with JetStream, restartable on the same port and
// store.
type natsServer struct {
	t     testing.TB
	store string
	port  int
	s     *server.Server
}

func startNATS(t testing.TB) *natsServer {
	n := &natsServer{t: t, store: t.TempDir(), port: -1}
	n.start()
	n.port = n.s.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { n.s.Shutdown(); n.s.WaitForShutdown() })
	return n
}

func (n *natsServer) start() {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: n.port, JetStream: true, StoreDir: n.store, NoLog: true, NoSigs: true,
	})
	require.NoError(n.t, err)
	go s.Start()
	require.True(n.t, s.ReadyForConnections(10*time.Second), "NATS did not start")
	n.s = s
}

func (n *natsServer) restart() {
	n.s.Shutdown()
	n.s.WaitForShutdown()
	n.start()
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// host is a directory of local topics: one machine's /dev/shm.
type host struct {
	name, dir string
	t         *topic.Topic
}

const topicName = "orders"

func newHost(t *testing.T, name string) *host {
	dir := t.TempDir()
	tp, err := topic.Open(topicName, topic.Config{Policy: ring.Block, Slots: 8192, MaxMessage: 240}, shm.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { tp.Close() })
	return &host{name: name, dir: dir, t: tp}
}

func (h *host) config(url string) bridge.Config {
	r := bridge.Route{Topic: topicName, Reliable: true}
	return bridge.Config{Name: h.name, URL: url, Dir: h.dir, Out: []bridge.Route{r}, In: []bridge.Route{r}, RetryWait: 50 * time.Millisecond, AckWait: time.Second}
}

func startBridge(t *testing.T, cfg bridge.Config) *proctest.Proc {
	return startBridgeKilledAt(t, cfg, "", 0)
}

// startBridgeKilledAt starts a bridge process that SIGKILLs itself the at-th time it
// reaches point ("written": an inbound message in the local topic and not acknowledged;
// "acked": an outbound batch acknowledged by JetStream and not released).
func startBridgeKilledAt(t *testing.T, cfg bridge.Config, point string, at int) *proctest.Proc {
	b, err := json.Marshal(cfg)
	require.NoError(t, err)
	p := proctest.Start(t, "bridge", proctest.Options{KillAt: point,
		Env: []string{envConfig + "=" + string(b), fmt.Sprintf("%s=%s %d", envKill, point, at)}})
	p.WaitPoint("started", 20*time.Second)
	return p
}

// event is the i-th test event's header.
func event(t *testing.T, i int) envelope.Header {
	h, err := envelope.NewHeader("test.Order", "shop")
	require.NoError(t, err)
	h.Correlation = fmt.Sprintf("order-%d", i)
	h.Priority = envelope.Priority(i % 3)
	h.Attempt = uint32(1 + i%2)
	h.Meta = []envelope.KV{{Key: "seq", Value: fmt.Sprint(i)}, {Key: "odd key=&:", Value: "v\r\n"}}
	return h
}

func publish(ctx context.Context, pub *ring.Publisher, h envelope.Header, payload []byte) error {
	n, err := h.Size(len(payload))
	if err != nil {
		return err
	}
	dst, err := pub.Reserve(ctx, envelope.TypeID(h.Type), n)
	if err != nil {
		return err
	}
	p, err := h.Put(dst, len(payload))
	if err != nil {
		return err
	}
	copy(p, payload)
	return pub.Commit()
}

// collector reads envelopes from a topic into a map by id, counting copies.
type collector struct {
	got   chan envelope.Header
	count map[uuid.UUID]int
	byID  map[uuid.UUID]envelope.Header
}

func collect(t *testing.T, h *host) *collector {
	sub, err := h.t.Subscribe(context.Background(), ring.SubscribeOptions{Start: ring.FromOldest})
	require.NoError(t, err)
	c := &collector{got: make(chan envelope.Header, 1<<16), count: map[uuid.UUID]int{}, byID: map[uuid.UUID]envelope.Header{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			rec, err := sub.Next(context.Background())
			if err != nil {
				return
			}
			v, err := envelope.Parse(rec.Data)
			if err == nil {
				hd := v.Header()
				hd.Meta = append(hd.Meta, envelope.KV{Key: "payload", Value: string(v.Payload())})
				c.got <- hd
			}
			sub.Release()
		}
	}()
	t.Cleanup(func() { sub.Close(); <-done })
	return c
}

// wait takes envelopes until n distinct ids arrived.
func (c *collector) wait(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for len(c.count) < n {
		select {
		case h := <-c.got:
			c.count[h.ID]++
			c.byID[h.ID] = h
		case <-deadline:
			t.Fatalf("%d of %d messages arrived in %v", len(c.count), n, timeout)
		}
	}
}

// settle takes what else arrives within d: a copy or a looped message would show up here.
func (c *collector) settle(d time.Duration) {
	deadline := time.After(d)
	for {
		select {
		case h := <-c.got:
			c.count[h.ID]++
			c.byID[h.ID] = h
		case <-deadline:
			return
		}
	}
}

// streamMsgs is how many messages the SHMQ stream holds; 0 while it or the server is not there.
func streamMsgs(t *testing.T, url string) uint64 {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "SHMQ")
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// TestTwoHosts joins two directories of topics ("hosts") only through NATS: every event
// published on one arrives on the other once with its whole envelope, nothing goes back,
// and JetStream holds each event once.
func TestTwoHosts(t *testing.T) {
	ns := startNATS(t)
	a, b := newHost(t, "a"), newHost(t, "b")
	fromA, atB := collect(t, a), collect(t, b)
	startBridge(t, a.config(ns.url()))
	startBridge(t, b.config(ns.url()))

	pub, err := a.t.Publisher(ring.Options{})
	require.NoError(t, err)
	defer pub.Close()
	const n = 2000
	sent := map[uuid.UUID]envelope.Header{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range n {
		h := event(t, i)
		sent[h.ID] = h
		require.NoError(t, publish(ctx, pub, h, fmt.Appendf(nil, "payload %d", i)))
	}
	atB.wait(t, n, time.Minute)
	fromA.wait(t, n, time.Minute)
	atB.settle(time.Second)
	fromA.settle(0)

	for id, h := range sent {
		require.Equal(t, 1, atB.count[id], "copies of %v at b", id)
		got := atB.byID[id]
		require.Equal(t, h.Time.UnixNano(), got.Time.UnixNano())
		got.Time = h.Time
		want := h
		want.Meta = append(append([]envelope.KV(nil), h.Meta...),
			envelope.KV{Key: bridge.OriginKey, Value: "a"},
			envelope.KV{Key: "payload", Value: fmt.Sprintf("payload %s", h.Meta[0].Value)})
		require.Equal(t, want, got)
	}
	require.Len(t, fromA.count, n, "a's topic got messages back from NATS")
	for id, k := range fromA.count {
		require.Equal(t, 1, k, "copies of %v at a", id)
	}
	require.EqualValues(t, n, streamMsgs(t, ns.url()), "messages in the JetStream stream")
}

// streamTo publishes n events from a goroutine at about rate per second and returns their
// ids in order once all are published.
func streamTo(t *testing.T, h *host, n, rate int) <-chan []uuid.UUID {
	pub, err := h.t.Publisher(ring.Options{})
	require.NoError(t, err)
	out := make(chan []uuid.UUID, 1)
	go func() {
		defer pub.Close()
		ids := make([]uuid.UUID, 0, n)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		per := max(rate/100, 1)
		for i := 0; i < n; {
			<-tick.C
			for j := 0; j < per && i < n; j, i = j+1, i+1 {
				e := event(t, i)
				if err := publish(context.Background(), pub, e, fmt.Appendf(nil, "payload %d", i)); err != nil {
					t.Errorf("publish %d: %v", i, err)
					out <- ids
					return
				}
				ids = append(ids, e.ID)
			}
		}
		out <- ids
	}()
	return out
}

// TestKillBridges SIGKILLs the sending bridge and then the receiving one mid-stream, each
// exactly where a restart must not duplicate (after JetStream acknowledged a batch and before
// the topic released it; after an inbound message reached the topic and before JetStream
// heard of it), and at a random moment, and restarts each: every event arrives exactly once.
func TestKillBridges(t *testing.T) {
	ns := startNATS(t)
	a, b := newHost(t, "a"), newHost(t, "b")
	atB := collect(t, b)
	ba := startBridgeKilledAt(t, a.config(ns.url()), "acked", 20)
	bb := startBridgeKilledAt(t, b.config(ns.url()), "written", 3000)
	const n = 12000
	done := streamTo(t, a, n, 4000)

	require.Eventually(t, ba.Killed, time.Minute, 10*time.Millisecond, "bridge a was not killed after an acknowledgement")
	ba = startBridge(t, a.config(ns.url()))
	require.Eventually(t, bb.Killed, time.Minute, 10*time.Millisecond, "bridge b was not killed after a local write")
	startBridge(t, b.config(ns.url()))
	atB.wait(t, 6000, time.Minute)
	ba.Kill() // and once at a random moment
	startBridge(t, a.config(ns.url()))

	ids := <-done
	require.Len(t, ids, n)
	atB.wait(t, n, 2*time.Minute)
	atB.settle(time.Second)
	for i, id := range ids {
		require.Equal(t, 1, atB.count[id], "copies of event %d", i)
	}
	require.Len(t, atB.count, n)
	require.EqualValues(t, n, streamMsgs(t, ns.url()), "messages in the JetStream stream (a's resent batch must be de-duplicated)")
}

// TestNATSRestart restarts the NATS server mid-stream: the bridges reconnect by themselves
// and every event arrives exactly once.
func TestNATSRestart(t *testing.T) {
	ns := startNATS(t)
	a, b := newHost(t, "a"), newHost(t, "b")
	atB := collect(t, b)
	startBridge(t, a.config(ns.url()))
	startBridge(t, b.config(ns.url()))
	const n = 8000
	done := streamTo(t, a, n, 4000)
	atB.wait(t, 2000, time.Minute)
	ns.restart()
	ids := <-done
	atB.wait(t, n, 2*time.Minute)
	atB.settle(time.Second)
	for i, id := range ids {
		require.Equal(t, 1, atB.count[id], "copies of event %d", i)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]bridge.Config{
		"no name":     {URL: "nats://x", Out: []bridge.Route{{Topic: "t"}}},
		"bad name":    {Name: "a.b", URL: "nats://x", Out: []bridge.Route{{Topic: "t"}}},
		"no url":      {Name: "a", Out: []bridge.Route{{Topic: "t"}}},
		"no routes":   {Name: "a", URL: "nats://x"},
		"bad topic":   {Name: "a", URL: "nats://x", Out: []bridge.Route{{Topic: "../t"}}},
		"bad subject": {Name: "a", URL: "nats://x", Out: []bridge.Route{{Topic: "t", Subject: "a..b"}}},
		"outside":     {Name: "a", URL: "nats://x", Out: []bridge.Route{{Topic: "t", Subject: "other.t", Reliable: true}}},
	} {
		_, err := bridge.New(cfg)
		require.True(t, errors.Is(err, bridge.ErrConfig), "%s: %v", name, err)
	}
}
