//go:build linux

package broker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/shmq/shmq/broker"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// Round trips of a 64-byte call, and the bare ring ping-pong under them (two SPSC rings,
// one record each way, no correlation, no goroutine hand-off), both with the rings'
// default Adaptive wait:
//
//	go test -run '^$' -bench . -benchtime 2s ./broker

func init() {
	proctest.Register("broker-bench-server", runBenchServer)
	proctest.Register("ring-echo", runRingEcho)
}

// runBenchServer serves one connection with ServeAppend echoing the request.
func runBenchServer(c *proctest.Child) error {
	var cfg serverConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return err
	}
	l, err := broker.Listen(cfg.Name, broker.Options{Dir: cfg.Dir})
	if err != nil {
		return err
	}
	defer l.Close()
	c.Point("listening")
	ctx := context.Background()
	conn, err := l.Accept(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return broker.ServeAppend(ctx, conn, func(dst, req []byte) ([]byte, error) { return append(dst, req...), nil }, cfg.Workers)
}

// runRingEcho reads records from ring "ping" and writes each back to ring "pong".
func runRingEcho(c *proctest.Child) error {
	dir := c.Args[0]
	ctx := context.Background()
	ping, err := shm.WaitOpen(ctx, "ping", shm.Options{Dir: dir})
	if err != nil {
		return err
	}
	pong, err := shm.WaitOpen(ctx, "pong", shm.Options{Dir: dir})
	if err != nil {
		return err
	}
	r, err := ring.NewSPSCReader(ping, ring.Options{})
	if err != nil {
		return err
	}
	w, err := ring.NewSPSCWriter(pong, ring.Options{})
	if err != nil {
		return err
	}
	c.Point("ready")
	for {
		rec, err := r.Next(ctx)
		if err != nil {
			return nil // the parent closed or died
		}
		err = w.Write(ctx, rec.Type, rec.Data)
		r.Release()
		if err != nil {
			return err
		}
	}
}

// benchCalls makes calls with one long-lived cancellable context, as a server's or a
// worker's would be: b.ReportAllocs shows that the ring's waits allocate nothing for it.
func benchCalls(b *testing.B, cl *broker.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := make([]byte, 64)
	buf := make([]byte, 0, 64)
	for range 1000 {
		if _, err := cl.CallAppend(ctx, buf[:0], req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := cl.CallAppend(ctx, buf[:0], req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCallCrossProcess: one caller in this process, the server in a child.
func BenchmarkCallCrossProcess(b *testing.B) {
	for _, workers := range []int{1, 4} {
		b.Run(map[int]string{1: "workers=1", 4: "workers=4"}[workers], func(b *testing.B) {
			dir := testDir(b)
			srv := proctest.Start(b, "broker-bench-server", proctest.Options{Args: jsonArgs(serverConfig{Dir: dir, Name: "svc", Workers: workers})})
			srv.WaitPoint("listening", procTimeout)
			ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
			defer cancel()
			conn, err := broker.Dial(ctx, "svc", broker.Options{Dir: dir})
			if err != nil {
				b.Fatal(err)
			}
			cl := broker.NewClient(conn)
			defer cl.Close()
			benchCalls(b, cl)
		})
	}
}

// BenchmarkCallCrossProcessParallel: 8 callers per CPU in this process, calls in flight
// together, the server's 4 workers in a child; ns/op is per call (calls/s = 1e9/ns).
func BenchmarkCallCrossProcessParallel(b *testing.B) {
	dir := testDir(b)
	srv := proctest.Start(b, "broker-bench-server", proctest.Options{Args: jsonArgs(serverConfig{Dir: dir, Name: "svc", Workers: 4})})
	srv.WaitPoint("listening", procTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	conn, err := broker.Dial(ctx, "svc", broker.Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	cl := broker.NewClient(conn)
	defer cl.Close()
	report := futexMetrics(b, dir, conn.Name())
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		ctx, cancel := context.WithCancel(context.Background()) // one per caller
		defer cancel()
		req := make([]byte, 64)
		buf := make([]byte, 0, 64)
		for pb.Next() {
			if _, err := cl.CallAppend(ctx, buf[:0], req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	report()
}

// futexMetrics reads the futex counters of connection name's rings now, and returns a
// function that reports, per call since, the system calls each side made: waits (a sleep)
// and wakes, for the requests (c2s) and the replies (s2c).
func futexMetrics(b *testing.B, dir, name string) func() {
	var segs []*shm.Segment
	for _, suffix := range []string{".c2s", ".s2c"} {
		seg, err := shm.Open(name+suffix, shm.Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { seg.Close() })
		segs = append(segs, seg)
	}
	read := func() (out [8]uint64) {
		for i, seg := range segs {
			st, err := ring.ReadStats(seg)
			if err != nil {
				b.Fatal(err)
			}
			out[4*i], out[4*i+1], out[4*i+2], out[4*i+3] = st.Readers.FutexWaits, st.Writers.FutexWakes, st.Writers.FutexWaits, st.Readers.FutexWakes
		}
		return out
	}
	before := read()
	return func() {
		after := read()
		for i, name := range []string{"req-sleeps/op", "req-wakes/op", "", "", "reply-sleeps/op", "reply-wakes/op", "", ""} {
			if name != "" {
				b.ReportMetric(float64(after[i]-before[i])/float64(b.N), name)
			}
		}
	}
}

// BenchmarkCallInProcess: caller and server in this process, on their own goroutines.
func BenchmarkCallInProcess(b *testing.B) {
	_, cc, sc := pair(b, broker.Options{Dir: testDir(b)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go broker.ServeAppend(ctx, sc, func(dst, req []byte) ([]byte, error) { return append(dst, req...), nil }, 1)
	cl := broker.NewClient(cc)
	defer cl.Close()
	benchCalls(b, cl)
}

// BenchmarkRingPingPongCrossProcess is the floor of BenchmarkCallCrossProcess: a 64-byte
// record to a child that writes it back, on two bare SPSC rings.
func BenchmarkRingPingPongCrossProcess(b *testing.B) {
	dir := testDir(b)
	spec := ring.Spec{Kind: ring.SPSC, Size: broker.DefaultRingSize}
	ping, err := ring.Create("ping", spec, shm.Options{Dir: dir, RemoveOnClose: true})
	if err != nil {
		b.Fatal(err)
	}
	defer ping.Close()
	pong, err := ring.Create("pong", spec, shm.Options{Dir: dir, RemoveOnClose: true})
	if err != nil {
		b.Fatal(err)
	}
	defer pong.Close()
	w, err := ring.NewSPSCWriter(ping, ring.Options{})
	if err != nil {
		b.Fatal(err)
	}
	r, err := ring.NewSPSCReader(pong, ring.Options{})
	if err != nil {
		b.Fatal(err)
	}
	echo := proctest.Start(b, "ring-echo", proctest.Options{Args: []string{dir}})
	echo.WaitPoint("ready", procTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	round := func() {
		if err := w.Write(ctx, 1, msg); err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.Read(ctx, buf); err != nil {
			b.Fatal(err)
		}
	}
	for range 1000 {
		round()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		round()
	}
	b.StopTimer()
	w.Close()
	echo.Wait(10 * time.Second)
}
