package bridge_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/bridge"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

// benchRig is an embedded NATS server, a subscriber on the subject that counts and times
// what arrives, and (for the bridged runs) a topic with a best-effort bridge to the subject.
type benchRig struct {
	nc       *nats.Conn
	got      atomic.Int64
	mu       sync.Mutex
	lat      []time.Duration // one-way latencies, filled by the subscriber goroutine
	measure  atomic.Bool
	subject  string
	pub      *ring.Publisher
	hdr      envelope.Header
	envBytes int
}

func newBenchRig(b *testing.B, bridged bool) *benchRig {
	ns := startNATS(b).url()
	r := &benchRig{subject: "shmq.bench"}
	var err error
	r.nc, err = nats.Connect(ns)
	require.NoError(b, err)
	b.Cleanup(r.nc.Close)
	sc, err := nats.Connect(ns)
	require.NoError(b, err)
	b.Cleanup(sc.Close)
	_, err = sc.Subscribe(r.subject, func(m *nats.Msg) {
		if r.measure.Load() && len(m.Data) >= 8 {
			sent := int64(binary.LittleEndian.Uint64(m.Data))
			r.mu.Lock()
			r.lat = append(r.lat, time.Duration(time.Now().UnixNano()-sent))
			r.mu.Unlock()
		}
		r.got.Add(1)
	})
	require.NoError(b, err)
	require.NoError(b, sc.Flush())
	if !bridged {
		return r
	}
	dir := b.TempDir()
	tp, err := topic.Open("bench", topic.Config{Policy: ring.Block, Slots: 4096, MaxMessage: 240}, shm.Options{Dir: dir})
	require.NoError(b, err)
	b.Cleanup(func() { tp.Close() })
	br, err := bridge.New(bridge.Config{Name: "bench", URL: ns, Dir: dir, Out: []bridge.Route{{Topic: "bench", Subject: r.subject}}})
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- br.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	r.pub, err = tp.Publisher(ring.Options{})
	require.NoError(b, err)
	b.Cleanup(func() { r.pub.Close() })
	r.hdr, err = envelope.NewHeader("bench.Tick", "bench")
	require.NoError(b, err)
	r.envBytes, err = r.hdr.Size(64)
	require.NoError(b, err)
	// Wait until the bridge's subscription is live: a message sent now arrives.
	require.Eventually(b, func() bool {
		before := r.got.Load()
		r.send(b, time.Now())
		time.Sleep(20 * time.Millisecond)
		return r.got.Load() > before
	}, 30*time.Second, time.Millisecond)
	return r
}

// send publishes one 64-byte message stamped with now: through the topic when bridged,
// straight to NATS otherwise.
func (r *benchRig) send(b *testing.B, now time.Time) {
	var payload [64]byte
	binary.LittleEndian.PutUint64(payload[:], uint64(now.UnixNano()))
	if r.pub == nil {
		if err := r.nc.Publish(r.subject, payload[:]); err != nil {
			b.Fatal(err)
		}
		return
	}
	dst, err := r.pub.Reserve(context.Background(), envelope.TypeID(r.hdr.Type), r.envBytes)
	if err != nil {
		b.Fatal(err)
	}
	p, err := r.hdr.Put(dst, 64)
	if err != nil {
		b.Fatal(err)
	}
	copy(p, payload[:])
	if err := r.pub.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBridgeThroughput sends b.N 64-byte messages as fast as it can, straight with
// nats.go ("nats") and through a topic and a best-effort bridge ("bridged"), and reports the
// rate at which they arrive at a NATS subscriber.
func BenchmarkBridgeThroughput(b *testing.B) {
	for _, bridged := range []bool{false, true} {
		name := map[bool]string{false: "nats", true: "bridged"}[bridged]
		b.Run(name, func(b *testing.B) {
			r := newBenchRig(b, bridged)
			base := r.got.Load()
			start := time.Now()
			now := time.Now()
			for i := 0; b.Loop(); i++ {
				r.send(b, now)
			}
			n := int64(b.N)
			deadline := time.Now().Add(time.Minute)
			for r.got.Load()-base < n && time.Now().Before(deadline) {
				time.Sleep(100 * time.Microsecond)
			}
			el := time.Since(start)
			b.ReportMetric(float64(r.got.Load()-base)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(n-(r.got.Load()-base)), "lost")
		})
	}
}

// BenchmarkBridgeLatency sends one 64-byte message every 200 µs and reports the one-way
// latency to a NATS subscriber in the same process, straight and through the bridge.
func BenchmarkBridgeLatency(b *testing.B) {
	for _, bridged := range []bool{false, true} {
		name := map[bool]string{false: "nats", true: "bridged"}[bridged]
		b.Run(name, func(b *testing.B) {
			r := newBenchRig(b, bridged)
			base := r.got.Load()
			r.measure.Store(true)
			tick := time.NewTicker(200 * time.Microsecond)
			defer tick.Stop()
			for b.Loop() {
				<-tick.C
				r.send(b, time.Now())
			}
			deadline := time.Now().Add(time.Minute)
			for r.got.Load()-base < int64(b.N) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			r.measure.Store(false)
			time.Sleep(10 * time.Millisecond)
			r.mu.Lock()
			lat := slices.Clone(r.lat)
			r.mu.Unlock()
			if len(lat) == 0 {
				b.Fatal("no latencies")
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
