package bus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

// rateResult is what a benchmark subscriber reports.
type rateResult struct {
	Received, Missed uint64
	Nanos            int64 // from the first event received to the end marker
	P50, P99         int64 // latency in ns of the events measured (latency roles)
	Count            int
}

const endType = 99

func rawTopicConfig() topic.Config {
	return topic.Config{Policy: ring.Overwrite, Slots: 4096, MaxMessage: 240}
}

// roleRawSub reads the raw topic "raw" until a record of type endType.
func roleRawSub(c *proctest.Child) error {
	dir, _ := childConfig(c.Args)
	tp, err := topic.Open("raw", rawTopicConfig(), shm.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer tp.Close()
	sub, err := tp.Subscribe(context.Background(), ring.SubscribeOptions{})
	if err != nil {
		return err
	}
	c.Point("ready")
	var res rateResult
	var start time.Time
	buf := make([]byte, 256)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for {
		rec, err := sub.Next(ctx)
		var lag *ring.LagError
		if errors.As(err, &lag) {
			res.Missed += lag.Missed
			continue
		}
		if err != nil {
			return err
		}
		copy(buf, rec.Data)
		typ := rec.Type
		if sub.Validate() != nil {
			sub.Release()
			continue
		}
		sub.Release()
		if typ == endType {
			res.Nanos = time.Since(start).Nanoseconds()
			return c.Result(res)
		}
		if res.Received == 0 {
			start = time.Now()
		}
		res.Received++
	}
}

// roleBenchSub is roleRawSub over the bus: a BestEffort subscription of Tick.
func roleBenchSub(c *proctest.Child) error {
	dir, _ := childConfig(c.Args)
	b, err := openBus(dir, Config{Source: "bench"})
	if err != nil {
		return err
	}
	defer b.Close()
	var res rateResult
	var start time.Time
	done := make(chan struct{})
	sub, err := Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error {
		if v.Kind == endType {
			if res.Nanos == 0 {
				res.Nanos = time.Since(start).Nanoseconds()
				close(done)
			}
			return nil
		}
		if res.Received == 0 {
			start = time.Now()
		}
		res.Received++
		return nil
	})
	if err != nil {
		return err
	}
	c.Point("ready")
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		return errors.New("no end marker")
	}
	res.Missed = sub.Stats().Dropped
	return c.Result(res)
}

// BenchmarkPubSub64 is publish → handler of 64-byte payloads with the subscriber in another
// process: the raw topic (ring.Overwrite, 64-byte records) and the bus (BestEffort, a Tick
// of 64 bytes in an envelope), in the same run. delivered/s is counted by the subscriber
// from its first event to the last; missed is what the publisher overwrote before the
// subscriber read it.
func BenchmarkPubSub64(b *testing.B) {
	report := func(b *testing.B, p *proctest.Proc) {
		var res rateResult
		if err := p.Result(0, &res, 120*time.Second); err != nil {
			b.Fatalf("%v\n%s", err, p.Output())
		}
		if res.Nanos > 0 {
			b.ReportMetric(float64(res.Received)/(float64(res.Nanos)/1e9), "delivered/s")
		}
		b.ReportMetric(float64(res.Missed)/float64(b.N), "missed/op")
	}
	b.Run("raw-topic", func(b *testing.B) {
		dir := b.TempDir()
		tp, err := topic.Open("raw", rawTopicConfig(), shm.Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		defer tp.Close()
		pub, err := tp.Publisher(ring.Options{})
		if err != nil {
			b.Fatal(err)
		}
		p := proctest.Start(b, "raw-sub", proctest.Options{Args: []string{dir}})
		p.WaitPoint("ready", 30*time.Second)
		msg := make([]byte, 64)
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := pub.Write(ctx, 1, msg); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		endUntilDone(b, p, func() error { return pub.Write(ctx, endType, msg) })
		report(b, p)
	})
	b.Run("bus-best-effort", func(b *testing.B) {
		dir := b.TempDir()
		bus := openTest(b, dir, Config{Source: "pub"})
		p := proctest.Start(b, "bench-sub", proctest.Options{Args: []string{dir}})
		p.WaitPoint("ready", 30*time.Second)
		ctx := context.Background()
		tick := &Tick{}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			tick.Seq = uint64(i)
			if _, err := Publish(ctx, bus, tick); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		endUntilDone(b, p, func() error { _, err := Publish(ctx, bus, &Tick{Kind: endType}); return err })
		report(b, p)
	})
}

// endUntilDone sends the end marker until the subscriber has reported (a marker can be
// overwritten before it is read, like any best-effort event).
func endUntilDone(b *testing.B, p *proctest.Proc, send func() error) {
	for range 1000 {
		if err := send(); err != nil {
			b.Fatal(err)
		}
		var res rateResult
		if p.Result(0, &res, 10*time.Millisecond) == nil {
			return
		}
	}
}

// roleLatencyWorker is a Reliable worker that measures, per priority, the time from each
// event's envelope timestamp to its handler, until it handled count=N Critical events (or
// all=N events of any priority).
func roleLatencyWorker(c *proctest.Child) error {
	dir, kv := childConfig(c.Args)
	b, err := openBus(dir, Config{Source: "lat", QueueFull: FailWhenFull})
	if err != nil {
		return err
	}
	defer b.Close()
	want := atoi(kv["count"])
	prio := envelope.Priority(atoi(kv["prio"]))
	h := hdrhistogram.New(1, int64(10*time.Second), 3)
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	_, err = Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error {
		lat := time.Now().UnixNano() - ev.Time
		if ev.Priority != prio {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if v.Kind == 1 { // measured
			_ = h.RecordValue(max(lat, 1))
			n++
			if n == want {
				close(done)
			}
		}
		return nil
	}, Delivery(Reliable{Name: "lat"}))
	if err != nil {
		return err
	}
	c.Point("ready")
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		return fmt.Errorf("handled %d of %d", n, want)
	}
	mu.Lock()
	defer mu.Unlock()
	return c.Result(rateResult{P50: h.ValueAtQuantile(50), P99: h.ValueAtQuantile(99), Count: n})
}

// roleRawLatency reads count=N records of the MPMC ring "rawq", each holding its write
// time, and reports the latency percentiles.
func roleRawLatency(c *proctest.Child) error {
	dir, kv := childConfig(c.Args)
	seg, err := shm.Open("rawq", shm.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer seg.Close()
	r, err := ring.NewMPMCReader(seg, ring.Options{})
	if err != nil {
		return err
	}
	defer r.Close()
	want := atoi(kv["count"])
	h := hdrhistogram.New(1, int64(10*time.Second), 3)
	c.Point("ready")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for range want {
		rec, err := r.Next(ctx)
		if err != nil {
			return err
		}
		_ = h.RecordValue(max(time.Now().UnixNano()-int64(binary.LittleEndian.Uint64(rec.Data)), 1))
		r.Release()
	}
	return c.Result(rateResult{P50: h.ValueAtQuantile(50), P99: h.ValueAtQuantile(99), Count: want})
}

// roleFlood publishes Low Ticks as fast as it can until killed (a full queue is skipped).
func roleFlood(c *proctest.Child) error {
	dir, _ := childConfig(c.Args)
	b, err := openBus(dir, Config{Source: "flood"})
	if err != nil {
		return err
	}
	defer b.Close()
	c.Point("ready")
	tick := &Tick{}
	for i := uint64(0); ; i++ {
		tick.Seq = i
		if _, err := Publish(context.Background(), b, tick, WithPriority(envelope.Low)); err != nil && !errors.Is(err, ErrQueueFull) {
			return err
		}
	}
}

// paced publishes n measured Ticks at priority p, one every interval.
func paced(b *testing.B, bus *Bus, n int, interval time.Duration, p envelope.Priority) {
	next := time.Now()
	tick := &Tick{Kind: 1}
	for i := range n {
		next = next.Add(interval)
		if d := time.Until(next); d > 200*time.Microsecond {
			time.Sleep(d - 100*time.Microsecond) // sleep most of the gap: 2 cores are shared
		}
		for time.Now().Before(next) {
		}
		tick.Seq = uint64(i)
		if _, err := Publish(context.Background(), bus, tick, WithPriority(p)); err != nil && !errors.Is(err, ErrQueueFull) {
			b.Fatal(err)
		}
	}
}

// BenchmarkReliableLatency is publish → handler latency of a Reliable subscription in
// another process: "10k" publishes Normal events at 10,000/s; "critical-alone" publishes
// Critical events at 1,000/s; "critical-under-low-flood" does the same while another
// process floods the Low lane at full speed. Each op is one measured event.
func BenchmarkReliableLatency(b *testing.B) {
	run := func(b *testing.B, prio envelope.Priority, interval time.Duration, flood bool) {
		dir := b.TempDir()
		bus := openTest(b, dir, Config{Source: "pub"})
		w := proctest.Start(b, "latency-worker", proctest.Options{Args: []string{dir, fmt.Sprintf("count=%d", b.N), fmt.Sprintf("prio=%d", prio)}})
		w.WaitPoint("ready", 30*time.Second)
		if flood {
			f := proctest.Start(b, "flood", proctest.Options{Args: []string{dir}})
			f.WaitPoint("ready", 30*time.Second)
			time.Sleep(100 * time.Millisecond)
			defer f.Kill()
		}
		b.ResetTimer()
		paced(b, bus, b.N, interval, prio)
		var res rateResult
		if err := w.Result(0, &res, 120*time.Second); err != nil {
			b.Fatalf("%v\n%s", err, w.Output())
		}
		b.StopTimer()
		b.ReportMetric(float64(res.P50)/1e3, "p50-µs")
		b.ReportMetric(float64(res.P99)/1e3, "p99-µs")
	}
	b.Run("normal-10k-per-s", func(b *testing.B) { run(b, envelope.Normal, 100*time.Microsecond, false) })
	// The floor under the bus: the same paced writes into a bare MPMC ring of the queue's
	// shape, read by another process with the ring's default (adaptive) wait. What this
	// shows in its tail is the machine's wake-up latency, not the bus's.
	b.Run("raw-mpmc-10k-per-s", func(b *testing.B) {
		dir := b.TempDir()
		bus := openTest(b, dir, Config{Source: "pub"})
		seg, _, err := ring.OpenOrCreate("rawq", bus.queueSpec(), shm.Options{Dir: dir, RemoveOnClose: true})
		if err != nil {
			b.Fatal(err)
		}
		defer seg.Close()
		wr, err := ring.NewMPMCWriter(seg, ring.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer wr.Close()
		r := proctest.Start(b, "raw-latency", proctest.Options{Args: []string{dir, fmt.Sprintf("count=%d", b.N)}})
		r.WaitPoint("ready", 30*time.Second)
		b.ResetTimer()
		var msg [64]byte
		next := time.Now()
		for range b.N {
			next = next.Add(100 * time.Microsecond)
			if d := time.Until(next); d > 200*time.Microsecond {
				time.Sleep(d - 100*time.Microsecond)
			}
			for time.Now().Before(next) {
			}
			binary.LittleEndian.PutUint64(msg[:], uint64(time.Now().UnixNano()))
			if err := wr.Write(context.Background(), 1, msg[:]); err != nil {
				b.Fatal(err)
			}
		}
		var res rateResult
		if err := r.Result(0, &res, 120*time.Second); err != nil {
			b.Fatalf("%v\n%s", err, r.Output())
		}
		b.StopTimer()
		b.ReportMetric(float64(res.P50)/1e3, "p50-µs")
		b.ReportMetric(float64(res.P99)/1e3, "p99-µs")
	})
	b.Run("critical-alone", func(b *testing.B) { run(b, envelope.Critical, time.Millisecond, false) })
	b.Run("critical-under-low-flood", func(b *testing.B) { run(b, envelope.Critical, time.Millisecond, true) })
}

// BenchmarkAllocsFixed counts allocations per event with a codec.Fixed payload, publisher
// and a BestEffort subscriber in this process (ReportAllocs counts both sides): Publish
// with envelope.IDs and the envelope put straight into the reserved record, delivery with
// the payload viewed in place.
func BenchmarkAllocsFixed(b *testing.B) {
	dir := b.TempDir()
	bus := openTest(b, dir, Config{Source: "pub"})
	var got uint64
	var mu sync.Mutex
	_, err := Subscribe(bus, func(ctx context.Context, ev *envelope.View, v *Tick) error {
		mu.Lock()
		got++
		mu.Unlock()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	tick := &Tick{}
	// Warm up: the first events grow the publisher's scratch and the subscriber's buffers.
	for range 100 {
		if _, err := Publish(ctx, bus, tick); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tick.Seq = uint64(i)
		if _, err := Publish(ctx, bus, tick); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	for {
		mu.Lock()
		n := got
		mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
}
