// Command modulebus runs the modules of a small measurement system as processes on one
// event bus (package bus):
//
//	go run ./examples/modulebus
//
// The modules:
//
//   - capture publishes raw readings at a high rate (rate-limited by the bus's
//     Config.Rate), an alarm now and then (warnings at Normal priority, critical ones at
//     Critical), and its status every 10 ms (Low priority);
//   - rig, a calibration rig, publishes readings of its own, slowly;
//   - storage stores every reading from capture: a Reliable subscription filtered by type
//     (reading) and source (capture), two worker goroutines, nothing lost;
//   - analysis follows all readings best-effort (it never slows capture down, and counts
//     what it missed) and takes the critical alarms reliably (a Where predicate on the
//     envelope's priority);
//   - the monitor (this process) shows capture's latest status with a LatestOnly
//     subscriber whose handler is slow: it only ever sees the newest status.
//
// At the end every module reports its subscriptions' Stats (delivered, failed, retried,
// dropped, conflated, latency percentiles); the monitor checks that every reading from
// capture was stored exactly once and prints the bus's Health.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shmq/shmq/bus"
	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/examples/internal/proc"
	"github.com/shmq/shmq/shm"
)

const busName = "plant"

// config is what the monitor passes to every module.
type config struct {
	Duration time.Duration // how long capture and rig publish
	Rate     float64       // capture's publish limit, events per second
	RigRate  int           // rig's readings per second
}

func defaultConfig() config {
	return config{Duration: 5 * time.Second, Rate: 20000, RigRate: 200}
}

// The event types, fixed-size: published and delivered without a copy through the codec.

// Reading is one raw measurement.
type Reading struct {
	Seq        uint64 // per source, from 0
	Sensor     uint32
	_          uint32
	Value      float64
	CapturedNs int64
}

// Alarm is a reading out of range: Level 1 is a warning, 2 critical.
type Alarm struct {
	Seq    uint64 // the reading's
	Sensor uint32
	Level  uint32
	Value  float64
}

// Status is capture's progress.
type Status struct {
	Readings uint64
	Alarms   uint64
	Rate     float64 // readings per second since the start
	Final    uint32  // 1 in the last status
	_        uint32
}

var roles = map[string]func(context.Context) error{
	"capture":  capture,
	"rig":      rig,
	"storage":  storage,
	"analysis": analysis,
}

func main() {
	if proc.Role() != "" {
		os.Exit(proc.RunChild(roles))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, defaultConfig())
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "modulebus:", err)
		os.Exit(1)
	}
}

// openBus opens the bus as the module source and registers the event types, as every
// process must.
func openBus(dir, source string, rate float64) (*bus.Bus, error) {
	b, err := bus.Open(busName, bus.Config{Dir: dir, Source: source, Rate: rate, QueueFull: bus.BlockWhenFull})
	if err != nil {
		return nil, err
	}
	if err := register(b); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func register(b *bus.Bus) error {
	readings, err := codec.NewFixed[Reading]()
	if err != nil {
		return err
	}
	alarms, err := codec.NewFixed[Alarm]()
	if err != nil {
		return err
	}
	statuses, err := codec.NewFixed[Status]()
	if err != nil {
		return err
	}
	return errors.Join(
		bus.Register(b, "reading", codec.Codec[Reading](readings)),
		bus.Register(b, "alarm", codec.Codec[Alarm](alarms)),
		bus.Register(b, "status", codec.Codec[Status](statuses)))
}

// publisherResult is what capture and rig report.
type publisherResult struct {
	Readings, Warnings, Critical, Statuses uint64
	Bus                                    bus.BusStats
	Seconds                                float64
}

// capture publishes readings as fast as the bus's rate limit lets it, for cfg.Duration.
func capture(ctx context.Context) error {
	var cfg config
	if err := proc.Config(&cfg); err != nil {
		return err
	}
	b, err := openBus(proc.Dir(), "capture", cfg.Rate)
	if err != nil {
		return err
	}
	defer b.Close()
	var res publisherResult
	start := time.Now()
	status := func(final bool) error {
		st := Status{Readings: res.Readings, Alarms: res.Warnings + res.Critical,
			Rate: float64(res.Readings) / time.Since(start).Seconds()}
		if final {
			st.Final = 1
		}
		_, err := bus.Publish(ctx, b, &st, bus.WithPriority(envelope.Low))
		res.Statuses++
		return err
	}
	nextStatus := start
	for seq := uint64(0); time.Since(start) < cfg.Duration; seq++ {
		r := Reading{Seq: seq, Sensor: uint32(seq % 8), Value: 20 + 5*math.Sin(float64(seq)/500), CapturedNs: time.Now().UnixNano()}
		if _, err := bus.Publish(ctx, b, &r); err != nil {
			return err
		}
		res.Readings++
		switch {
		case seq%1000 == 999:
			if _, err := bus.Publish(ctx, b, &Alarm{Seq: seq, Sensor: r.Sensor, Level: 2, Value: r.Value},
				bus.WithPriority(envelope.Critical)); err != nil {
				return err
			}
			res.Critical++
		case seq%200 == 199:
			if _, err := bus.Publish(ctx, b, &Alarm{Seq: seq, Sensor: r.Sensor, Level: 1, Value: r.Value}); err != nil {
				return err
			}
			res.Warnings++
		}
		if time.Now().After(nextStatus) {
			if err := status(false); err != nil {
				return err
			}
			nextStatus = nextStatus.Add(10 * time.Millisecond)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	if err := status(true); err != nil {
		return err
	}
	res.Bus = b.Stats()
	return proc.Result(res)
}

// rig publishes cfg.RigRate readings a second for cfg.Duration, as source "rig".
func rig(ctx context.Context) error {
	var cfg config
	if err := proc.Config(&cfg); err != nil {
		return err
	}
	b, err := openBus(proc.Dir(), "rig", 0)
	if err != nil {
		return err
	}
	defer b.Close()
	var res publisherResult
	start := time.Now()
	t := time.NewTicker(time.Second / time.Duration(cfg.RigRate))
	defer t.Stop()
	for seq := uint64(0); time.Since(start) < cfg.Duration; seq++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if _, err := bus.Publish(ctx, b, &Reading{Seq: seq, Sensor: 99, Value: 1, CapturedNs: time.Now().UnixNano()}); err != nil {
			return err
		}
		res.Readings++
	}
	res.Seconds = time.Since(start).Seconds()
	res.Bus = b.Stats()
	return proc.Result(res)
}

// subscriberResult is what storage and analysis report.
type subscriberResult struct {
	Subs     []subReport
	Shutdown bus.ShutdownReport
	// storage
	Stored, Distinct, Duplicates, FromOthers uint64
	// analysis
	BySource map[string]sourceStats
	Critical uint64
}

type subReport struct {
	Label, Filter string
	Stats         bus.Stats
}

type sourceStats struct {
	Count    uint64
	Mean     float64
	Min, Max float64
}

// drainQueues waits, once the publishers are done (the monitor's SIGTERM), until this
// module's Reliable queues are empty, so that Shutdown leaves nothing behind.
func drainQueues(dir string, names ...string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		h, err := bus.Inspect(busName, shm.Options{Dir: dir}, bus.Thresholds{LastDeadLetters: -1})
		if err != nil {
			return err
		}
		left := uint64(0)
		for _, q := range h.Queues {
			for _, n := range names {
				if q.Subscription == n {
					left += q.Depth
				}
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d events still queued for %v", left, names)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storage stores every reading from capture, reliably, on two workers.
func storage(ctx context.Context) error {
	b, err := openBus(proc.Dir(), "storage", 0)
	if err != nil {
		return err
	}
	defer b.Close()
	var (
		mu         sync.Mutex
		seen       []uint8 // per capture sequence number: times stored
		fromOthers uint64
	)
	sub, err := bus.Subscribe(b, func(ctx context.Context, ev *envelope.View, r *Reading) error {
		// r points into shared memory until we return: this is where a real module writes it
		// to disk; here we mark its sequence number.
		mu.Lock()
		defer mu.Unlock()
		if string(ev.Source()) != "capture" {
			fromOthers++ // the source filter lets none through
			return nil
		}
		for uint64(len(seen)) <= r.Seq {
			seen = append(seen, make([]uint8, len(seen)+1024)...)
		}
		if seen[r.Seq] < 255 {
			seen[r.Seq]++
		}
		return nil
	}, bus.Delivery(bus.Reliable{Name: "storage", Timeout: time.Second}), bus.Workers(2), bus.FromSources("capture"))
	if err != nil {
		return err
	}
	proc.Ready()
	<-ctx.Done() // the monitor's SIGTERM: capture is done
	if err := drainQueues(proc.Dir(), "storage"); err != nil {
		return err
	}
	rep, err := b.Shutdown(context.Background())
	if err != nil {
		return err
	}
	res := subscriberResult{Shutdown: rep, FromOthers: fromOthers,
		Subs: []subReport{{"reading → storage", "source capture", sub.Stats()}}}
	mu.Lock()
	for _, n := range seen {
		if n > 0 {
			res.Stored += uint64(n)
			res.Distinct++
			res.Duplicates += uint64(n - 1)
		}
	}
	mu.Unlock()
	return proc.Result(res)
}

// analysis keeps running statistics of all readings (best effort) and takes the critical
// alarms reliably.
func analysis(ctx context.Context) error {
	b, err := openBus(proc.Dir(), "analysis", 0)
	if err != nil {
		return err
	}
	defer b.Close()
	var (
		mu       sync.Mutex
		bySource = map[string]sourceStats{}
		critical uint64
	)
	readings, err := bus.Subscribe(b, func(ctx context.Context, ev *envelope.View, r *Reading) error {
		mu.Lock()
		defer mu.Unlock()
		s := bySource[string(ev.Source())]
		if s.Count == 0 {
			s.Min, s.Max = r.Value, r.Value
		}
		s.Count++
		s.Mean += (r.Value - s.Mean) / float64(s.Count)
		s.Min, s.Max = min(s.Min, r.Value), max(s.Max, r.Value)
		bySource[string(ev.Source())] = s
		return nil
	}) // BestEffort is the default
	if err != nil {
		return err
	}
	alarms, err := bus.Subscribe(b, func(ctx context.Context, ev *envelope.View, a *Alarm) error {
		mu.Lock()
		critical++
		mu.Unlock()
		return nil
	}, bus.Delivery(bus.Reliable{Name: "alarms", Timeout: time.Second}),
		bus.Where(func(v *envelope.View) bool { return v.Priority == envelope.Critical }))
	if err != nil {
		return err
	}
	proc.Ready()
	<-ctx.Done()
	if err := drainQueues(proc.Dir(), "alarms"); err != nil {
		return err
	}
	// The best-effort subscriber has no queue to look at: wait until it has taken (or
	// counted as dropped) everything, which shows as its counters standing still.
	last := uint64(math.MaxUint64)
	for {
		st := readings.Stats()
		if n := st.Delivered + st.Dropped; n == last {
			break
		} else {
			last = n
		}
		time.Sleep(200 * time.Millisecond)
	}
	rep, err := b.Shutdown(context.Background())
	if err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return proc.Result(subscriberResult{Shutdown: rep, BySource: bySource, Critical: critical, Subs: []subReport{
		{"reading", "any source", readings.Stats()},
		{"alarm → alarms", "critical only", alarms.Stats()},
	}})
}

// run is the monitor: it starts the modules, shows capture's status while they run, and
// prints what happened.
func run(ctx context.Context, out io.Writer, cfg config) (err error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+90*time.Second) // never hang
	defer cancel()
	g, err := proc.NewGroup("modulebus", out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := g.Close(); err == nil {
			err = cerr
		}
	}()
	fmt.Fprintf(out, "segments: %s (removed at the end)\n", g.Dir)
	fmt.Fprintf(out, "modulebus: capture publishes readings (up to %.0f events/s) for %v; rig %d readings/s; storage, analysis and this monitor subscribe\n",
		cfg.Rate, cfg.Duration, cfg.RigRate)

	b, err := openBus(g.Dir, "monitor", 0)
	if err != nil {
		return err
	}
	defer b.Close()

	// Subscribers first: a Reliable subscription receives what is published after it exists.
	var subs []*proc.Proc
	for _, role := range []string{"storage", "analysis"} {
		p, err := g.Start(role, cfg)
		if err != nil {
			return err
		}
		if err := p.Ready(ctx); err != nil {
			return err
		}
		subs = append(subs, p)
	}
	var (
		mu     sync.Mutex
		latest Status
		seen   uint64
	)
	status, err := bus.Subscribe(b, func(ctx context.Context, ev *envelope.View, st *Status) error {
		mu.Lock()
		latest = *st // a copy: st points into the subscription's buffer
		seen++
		mu.Unlock()
		time.Sleep(50 * time.Millisecond) // a slow dashboard
		return nil
	}, bus.Delivery(bus.LatestOnly{}))
	if err != nil {
		return err
	}

	capt, err := g.Start("capture", cfg)
	if err != nil {
		return err
	}
	rg, err := g.Start("rig", cfg)
	if err != nil {
		return err
	}

	// While they run: capture's latest status every second, health half-way.
	tick := time.NewTicker(time.Second)
	start := time.Now()
	healthShown := false
	var capRes, rigRes publisherResult
	capDone := make(chan error, 1)
	go func() { capDone <- capt.Result(ctx, &capRes) }()
wait:
	for {
		select {
		case err := <-capDone:
			if err != nil {
				return err
			}
			break wait
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			mu.Lock()
			st := latest
			mu.Unlock()
			fmt.Fprintf(out, "  %4.1fs  monitor: capture status: %d readings, %d alarms, %.0f readings/s\n",
				time.Since(start).Seconds(), st.Readings, st.Alarms, st.Rate)
			if !healthShown && time.Since(start) > cfg.Duration/2 {
				healthShown = true
				if err := printHealth(out, b, "half-way"); err != nil {
					return err
				}
			}
		}
	}
	tick.Stop()
	if err := rg.Result(ctx, &rigRes); err != nil {
		return err
	}
	for _, p := range []*proc.Proc{capt, rg} {
		if err := p.Wait(ctx); err != nil {
			return fmt.Errorf("%s: %v", p.Role, err)
		}
	}
	// The LatestOnly subscriber gets to the newest status, the final one, shortly.
	for {
		mu.Lock()
		final := latest.Final == 1
		mu.Unlock()
		if final {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the monitor never saw capture's final status: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := printHealth(out, b, "publishers done"); err != nil {
		return err
	}

	// The publishers are done: the subscribers drain their queues, shut down and report.
	var stor, anal subscriberResult
	for i, p := range subs {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			return err
		}
		res := []*subscriberResult{&stor, &anal}[i]
		if err := p.Result(ctx, res); err != nil {
			return err
		}
		if err := p.Wait(ctx); err != nil {
			return fmt.Errorf("%s: %v", p.Role, err)
		}
	}
	statusStats := status.Stats()
	mu.Lock()
	final := latest
	mu.Unlock()

	fmt.Fprintf(out, "\npublished: capture %d readings, %d warnings (Normal), %d critical alarms (Critical), %d statuses (Low) in %.1fs (%.0f readings/s); rig %d readings\n",
		capRes.Readings, capRes.Warnings, capRes.Critical, capRes.Statuses, capRes.Seconds, float64(capRes.Readings)/capRes.Seconds, rigRes.Readings)
	fmt.Fprintf(out, "           capture's bus stats: published by priority %v, waited for a full queue %d times\n\n",
		capRes.Bus.Published, capRes.Bus.QueueFull)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "module\tsubscription\tmode\tfilter\tdelivered\tfailed\tretried\tdropped\tconflated\tlatency p50\tp95\tp99\tavg handler")
	row := func(module string, r subReport) {
		s := r.Stats
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%v\t%v\t%v\t%v\n", module, r.Label, s.Mode, r.Filter,
			s.Delivered, s.Failed, s.Retried, s.Dropped, s.Conflated, s.LatencyP50, s.LatencyP95, s.LatencyP99, s.AvgHandler)
	}
	for _, r := range stor.Subs {
		row("storage", r)
	}
	for _, r := range anal.Subs {
		row("analysis", r)
	}
	row("monitor", subReport{"status", "-", statusStats})
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(out, "\nstorage: %d readings stored, %d distinct of the %d capture published, %d duplicates, %d from other sources\n",
		stor.Stored, stor.Distinct, capRes.Readings, stor.Duplicates, stor.FromOthers)
	fmt.Fprintf(out, "analysis: critical alarms %d of %d; best effort saw %d of %d capture readings and %d of %d rig readings (%d events dropped)\n",
		anal.Critical, capRes.Critical, anal.BySource["capture"].Count, capRes.Readings, anal.BySource["rig"].Count, rigRes.Readings,
		anal.Subs[0].Stats.Dropped)
	for _, src := range []string{"capture", "rig"} {
		s := anal.BySource[src]
		fmt.Fprintf(out, "          %s: mean %.2f, min %.2f, max %.2f\n", src, s.Mean, s.Min, s.Max)
	}
	fmt.Fprintf(out, "monitor: %d status events handled of %d published, %d skipped as stale; the last one says %d readings (final: %v)\n",
		statusStats.Delivered, capRes.Statuses, capRes.Statuses-min(capRes.Statuses, statusStats.Delivered), final.Readings, final.Final == 1)
	fmt.Fprintln(out, "         (its Conflated counter counts the stale events of every type on the lanes, readings included)")
	for _, r := range []struct {
		name string
		rep  bus.ShutdownReport
	}{{"storage", stor.Shutdown}, {"analysis", anal.Shutdown}} {
		fmt.Fprintf(out, "shutdown %s: unfinished %v, left queued %v\n", r.name, r.rep.Unfinished, r.rep.Queued)
	}
	// Their Reliable subscriptions stay registered (another worker may come), so health now
	// reports queues without a worker.
	if err := printHealth(out, b, "subscriber processes gone"); err != nil {
		return err
	}

	var bad []error
	if stor.Distinct != capRes.Readings || stor.Duplicates != 0 || stor.FromOthers != 0 {
		bad = append(bad, fmt.Errorf("storage stored %d distinct readings of %d (%d duplicates, %d from others)",
			stor.Distinct, capRes.Readings, stor.Duplicates, stor.FromOthers))
	}
	if anal.Critical != capRes.Critical {
		bad = append(bad, fmt.Errorf("analysis got %d critical alarms of %d", anal.Critical, capRes.Critical))
	}
	if final.Readings != capRes.Readings {
		bad = append(bad, fmt.Errorf("the last status says %d readings, capture published %d", final.Readings, capRes.Readings))
	}
	if err := errors.Join(bad...); err != nil {
		return err
	}
	fmt.Fprintf(out, "every reading from capture accounted for: %d published, %d stored once; every critical alarm handled\n",
		capRes.Readings, stor.Distinct)
	return nil
}

func printHealth(out io.Writer, b *bus.Bus, when string) error {
	h, err := b.Health()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "health (%s): %s, dead letters %d\n", when, h.State, h.DeadLetters)
	for _, q := range h.Queues {
		fmt.Fprintf(out, "  queue %-8s depth %5d of %d, fullest lane %3.0f%%, worker endpoints %d\n",
			q.Subscription, q.Depth, q.Capacity, 100*q.Utilisation, q.Workers)
	}
	for _, r := range h.Reasons {
		sub := r.Subscription
		if sub != "" {
			sub += ": "
		}
		fmt.Fprintf(out, "  %s %s: %s%s\n", r.State, r.Check, sub, r.Detail)
	}
	return nil
}
