package bridge_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/bridge"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

const benchSubject = "shmq.bench"

// benchRig is an embedded NATS server, a nats.go connection publishing straight to it, and
// (bridged) a topic with a best-effort bridge to the same subject.
type benchRig struct {
	ns       *natsServer
	nc       *nats.Conn
	pub      *ring.Publisher // nil: straight
	hdr      envelope.Header
	envBytes int
}

func newBenchRig(b *testing.B, bridged bool, wait ring.Wait) *benchRig {
	r := &benchRig{ns: startNATS(b)}
	var err error
	r.nc, err = nats.Connect(r.ns.url())
	require.NoError(b, err)
	b.Cleanup(r.nc.Close)
	if !bridged {
		return r
	}
	dir := b.TempDir()
	tp, err := topic.Open("bench", topic.Config{Policy: ring.Block, Slots: 4096, MaxMessage: 240}, shm.Options{Dir: dir})
	require.NoError(b, err)
	b.Cleanup(func() { tp.Close() })
	br, err := bridge.New(bridge.Config{Name: "bench", URL: r.ns.url(), Dir: dir, Wait: wait, Out: []bridge.Route{{Topic: "bench", Subject: benchSubject}}})
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- br.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done; br.Close() })
	r.pub, err = tp.Publisher(ring.Options{})
	require.NoError(b, err)
	b.Cleanup(func() { r.pub.Close() })
	r.hdr, err = envelope.NewHeader("bench.Tick", "bench")
	require.NoError(b, err)
	r.envBytes, err = r.hdr.Size(64)
	require.NoError(b, err)
	// The bridge subscribes from the next message: wait until one sent now reaches NATS.
	require.Eventually(b, func() bool {
		before := r.inMsgs()
		r.send(b, time.Now())
		time.Sleep(20 * time.Millisecond)
		return r.inMsgs() > before
	}, 30*time.Second, time.Millisecond)
	return r
}

// inMsgs is how many messages the server has received from its clients.
func (r *benchRig) inMsgs() int64 {
	v, err := r.ns.s.Varz(&server.VarzOptions{})
	if err != nil {
		return 0
	}
	return v.InMsgs
}

// send publishes one 64-byte message stamped with now: through the topic when bridged,
// straight to NATS otherwise.
func (r *benchRig) send(b *testing.B, now time.Time) {
	var payload [64]byte
	binary.LittleEndian.PutUint64(payload[:], uint64(now.UnixNano()))
	if r.pub == nil {
		if err := r.nc.Publish(benchSubject, payload[:]); err != nil {
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

// BenchmarkBridgeThroughput publishes b.N 64-byte messages as fast as it can, straight with
// nats.go ("nats") and through a topic and a best-effort bridge ("bridged"), and reports the
// rate at which the server received them (no subscriber: the "publish rate").
func BenchmarkBridgeThroughput(b *testing.B) {
	for _, bridged := range []bool{false, true} {
		b.Run(map[bool]string{false: "nats", true: "bridged"}[bridged], func(b *testing.B) {
			r := newBenchRig(b, bridged, ring.Wait{})
			base := r.inMsgs()
			start := time.Now()
			for b.Loop() {
				r.send(b, start)
			}
			if !bridged {
				require.NoError(b, r.nc.Flush())
			}
			deadline := time.Now().Add(time.Minute)
			for r.inMsgs()-base < int64(b.N) && time.Now().Before(deadline) {
				time.Sleep(200 * time.Microsecond)
			}
			got := r.inMsgs() - base
			b.ReportMetric(float64(got)/time.Since(start).Seconds(), "msgs/s")
			if got != int64(b.N) {
				b.Fatalf("the server received %d of %d", got, b.N)
			}
		})
	}
}

// BenchmarkBridgeLatency sends one 64-byte message every 200 µs and reports the one-way
// latency to a nats.go subscriber in the same process, straight and through the bridge
// (its topic subscription waiting adaptively, and spinning).
func BenchmarkBridgeLatency(b *testing.B) {
	for _, c := range []struct {
		name    string
		bridged bool
		wait    ring.Wait
	}{{"nats", false, ring.Wait{}}, {"bridged", true, ring.Wait{}}, {"bridged-spin", true, ring.Spin()}} {
		b.Run(c.name, func(b *testing.B) {
			r := newBenchRig(b, c.bridged, c.wait)
			sc, err := nats.Connect(r.ns.url())
			require.NoError(b, err)
			defer sc.Close()
			var mu sync.Mutex
			var lat []time.Duration
			_, err = sc.Subscribe(benchSubject, func(m *nats.Msg) {
				if len(m.Data) >= 8 {
					d := time.Duration(time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(m.Data)))
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			})
			require.NoError(b, err)
			require.NoError(b, sc.Flush())
			tick := time.NewTicker(200 * time.Microsecond)
			defer tick.Stop()
			for b.Loop() {
				<-tick.C
				r.send(b, time.Now())
			}
			deadline := time.Now().Add(time.Minute)
			for {
				mu.Lock()
				n := len(lat)
				mu.Unlock()
				if n >= b.N || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			mu.Lock()
			got := slices.Clone(lat)
			mu.Unlock()
			if len(got) == 0 {
				b.Fatal("no message arrived")
			}
			slices.Sort(got)
			b.ReportMetric(float64(got[len(got)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(got[len(got)*99/100].Nanoseconds())/1e3, "p99-µs")
		})
	}
}
