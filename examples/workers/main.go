// Command workers compares two ways for worker threads to take typed messages from shared
// memory: an event loop per thread that sleeps in the kernel until a message (or a posted
// task) arrives (package loop, futex wait), against the classic loop that polls every 10 ms.
//
//	go run ./examples/workers
//
// Three processes: a producer sends typed messages (codec.Fixed, zero-copy) at a steady
// rate to every worker thread of two consumer processes, each thread on its own SPSC
// ring; one consumer's threads run event loops, the other's poll. Each consumer's main
// goroutine posts a task to each of its threads every 20 ms (loop.Post, or a queue the
// poller looks at). After the load phase the producer is quiet for a while, then closes
// its rings. The program prints, for both consumers, the messages received (every one is
// accounted for), the latency from send to handler and from post to task, and the
// consumer process's CPU time (getrusage) under load and idle.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/examples/internal/proc"
	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// config is what the parent passes to every process.
type config struct {
	Threads   int           // worker threads per consumer process
	Rate      int           // messages per second to each thread
	Load      time.Duration // how long messages flow
	Idle      time.Duration // then how long nothing does
	TaskEvery time.Duration // how often each thread gets a posted task (during the load)
	Poll      time.Duration // the polling consumer's sleep
}

func defaultConfig() config {
	return config{Threads: 4, Rate: 250, Load: 4 * time.Second, Idle: 2 * time.Second,
		TaskEvery: 20 * time.Millisecond, Poll: 10 * time.Millisecond}
}

// Tick is the message: a fixed-size struct, sent and read in place (codec.Fixed).
type Tick struct {
	Seq    uint64 // per ring, from 0
	SentNs int64  // CLOCK_MONOTONIC when sent
	Value  float64
}

// Phase marks the start of the load and of the idle phase on every ring.
type Phase struct {
	Phase uint32
	_     uint32
}

const (
	idTick  = 1 // record types on the rings
	idPhase = 2

	phaseLoad = 1
	phaseIdle = 2
	phaseEnd  = 3 // not sent: the ring's end of stream

	ringSize = 64 << 10
)

var roles = map[string]func(context.Context) error{
	"producer": producer,
	"event":    func(ctx context.Context) error { return consumer(ctx, "event") },
	"poll":     func(ctx context.Context) error { return consumer(ctx, "poll") },
}

func main() {
	if proc.Role() != "" {
		os.Exit(proc.RunChild(roles))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, defaultConfig())
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "workers:", err)
		os.Exit(1)
	}
}

// mono is CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
func mono() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func ringName(kind string, i int) string { return fmt.Sprintf("%s.%d", kind, i) }

func openRing(kind string, i int) (*shm.Segment, error) {
	seg, _, err := ring.OpenOrCreate(ringName(kind, i), ring.Spec{Kind: ring.SPSC, Size: ringSize},
		shm.Options{Dir: proc.Dir()})
	return seg, err
}

// producerResult is what the producer reports.
type producerResult struct {
	PerThread uint64 // ticks sent to each thread (the same number to every one)
}

// producer sends Phase{load}, then Rate ticks a second for Load to every thread of both
// consumers, then Phase{idle}, waits Idle and closes: the consumers see the end of stream.
func producer(ctx context.Context) error {
	var cfg config
	if err := proc.Config(&cfg); err != nil {
		return err
	}
	ticks, err := codec.NewFixed[Tick]()
	if err != nil {
		return err
	}
	phases, err := codec.NewFixed[Phase]()
	if err != nil {
		return err
	}
	type out struct {
		tick  *codec.Sender[Tick]
		phase *codec.Sender[Phase]
	}
	var outs []out
	for i := range cfg.Threads {
		for _, kind := range []string{"event", "poll"} {
			seg, err := openRing(kind, i)
			if err != nil {
				return err
			}
			defer seg.Close()
			w, err := ring.NewWriter(seg, ring.Options{Wait: ring.Futex()})
			if err != nil {
				return err
			}
			defer w.Close() // the end of stream, once the idle phase is over
			outs = append(outs, out{codec.NewSender(w, idTick, codec.Codec[Tick](ticks)),
				codec.NewSender(w, idPhase, codec.Codec[Phase](phases))})
		}
	}
	// A writer waits for its reader: these return once every consumer thread is attached.
	for _, o := range outs {
		if err := o.phase.Send(ctx, &Phase{Phase: phaseLoad}); err != nil {
			return err
		}
	}
	every := time.Second / time.Duration(cfg.Rate)
	t := time.NewTicker(every)
	defer t.Stop()
	end := time.Now().Add(cfg.Load)
	var seq uint64
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		tick := Tick{Seq: seq, SentNs: mono(), Value: float64(seq) * 0.5}
		for _, o := range outs {
			if err := o.tick.Send(ctx, &tick); err != nil {
				return err
			}
		}
		seq++
	}
	for _, o := range outs {
		if err := o.phase.Send(ctx, &Phase{Phase: phaseIdle}); err != nil {
			return err
		}
	}
	if err := proc.Result(producerResult{PerThread: seq}); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(cfg.Idle):
	}
	return nil // the deferred Closes end every stream
}

// worker is one consumer thread: its ring, its histograms and its counters, touched only
// on its own goroutine (tasks included: they run there too).
type worker struct {
	i        int
	mux      *codec.Mux
	next     uint64 // the sequence number expected next
	received uint64
	gaps     uint64 // messages missing from the sequence
	dups     uint64 // messages seen again or out of order
	lat      *hdrhistogram.Histogram
	tasks    uint64
	taskLat  *hdrhistogram.Histogram
	endErr   error
	post     func(fn func()) error // hands a task to the thread
}

type phaseEvent struct{ worker, phase int }

func newWorker(i int, phases chan<- phaseEvent) (*worker, error) {
	ticks, err := codec.NewFixed[Tick]()
	if err != nil {
		return nil, err
	}
	phaseCodec, err := codec.NewFixed[Phase]()
	if err != nil {
		return nil, err
	}
	w := &worker{i: i, mux: codec.NewMux(),
		lat: hdrhistogram.New(1, int64(time.Minute), 3), taskLat: hdrhistogram.New(1, int64(time.Minute), 3)}
	codec.Handle(w.mux, idTick, codec.Codec[Tick](ticks), func(t *Tick) error {
		// t points into the ring: read what is needed now.
		_ = w.lat.RecordValue(max(mono()-t.SentNs, 1))
		switch seq := t.Seq; {
		case seq == w.next:
		case seq > w.next:
			w.gaps += seq - w.next
		default:
			w.dups++
		}
		w.next = max(w.next, t.Seq+1)
		w.received++
		return nil
	})
	codec.Handle(w.mux, idPhase, codec.Codec[Phase](phaseCodec), func(p *Phase) error {
		phases <- phaseEvent{i, int(p.Phase)}
		return nil
	})
	return w, nil
}

// task is what the consumer's main goroutine posts: it measures its own delay.
func (w *worker) task(posted int64) func() {
	return func() {
		_ = w.taskLat.RecordValue(max(mono()-posted, 1))
		w.tasks++
	}
}

// poller is the classic polling thread: take what is there, run the queued tasks, sleep.
type poller struct {
	mu    sync.Mutex
	tasks []func()
}

func (p *poller) post(fn func()) error {
	p.mu.Lock()
	p.tasks = append(p.tasks, fn)
	p.mu.Unlock()
	return nil
}

func (w *worker) pollWith(ctx context.Context, p *poller, r ring.Reader, every time.Duration, phases chan<- phaseEvent) error {
	var todo []func()
	for {
		for {
			rec, err := r.TryNext()
			if errors.Is(err, ring.ErrEmpty) {
				break
			}
			if err != nil {
				w.endErr = err
				phases <- phaseEvent{w.i, phaseEnd}
				if !errors.Is(err, io.EOF) {
					return fmt.Errorf("thread %d: stream ended by %w", w.i, err)
				}
				return nil
			}
			derr := w.mux.Dispatch(rec)
			r.Release()
			if derr != nil {
				return derr
			}
		}
		p.mu.Lock()
		todo, p.tasks = p.tasks, todo[:0]
		p.mu.Unlock()
		for _, fn := range todo {
			fn()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// consumerResult is what a consumer process reports.
type consumerResult struct {
	Received, Gaps, Dups  uint64
	P50, P99, Max         int64 // message latency, ns
	Tasks                 uint64
	TaskP50, TaskP99      int64
	LoadCPU, IdleCPU      time.Duration
	LoadWall, IdleWall    time.Duration
	ThreadsEnded, Threads int
}

// consumer runs cfg.Threads worker threads of one kind ("event" or "poll"), posts tasks to
// them during the load, and measures its own CPU time over the load and the idle phase.
func consumer(ctx context.Context, kind string) error {
	var cfg config
	if err := proc.Config(&cfg); err != nil {
		return err
	}
	phases := make(chan phaseEvent, 4*cfg.Threads)
	workers := make([]*worker, cfg.Threads)
	errs := make(chan error, cfg.Threads)
	for i := range workers {
		seg, err := openRing(kind, i)
		if err != nil {
			return err
		}
		defer seg.Close()
		r, err := ring.NewReader(seg, ring.Options{Wait: ring.Futex()})
		if err != nil {
			return err
		}
		defer r.Close()
		w, err := newWorker(i, phases)
		if err != nil {
			return err
		}
		workers[i] = w
		// post is set before the thread starts, so the main goroutine may use it at once.
		ready := make(chan struct{})
		go func() { errs <- w.run(ctx, kind, r, cfg.Poll, phases, ready) }()
		<-ready
	}

	// Count the phases: each is reached once every thread has seen its marker.
	seen := map[int]int{}
	finished := 0 // threads that returned
	waitPhase := func(ph int) error {
		for seen[ph] < cfg.Threads {
			select {
			case e := <-phases:
				seen[e.phase]++
			case err := <-errs:
				finished++
				if err != nil {
					return err
				}
				if ph != phaseEnd {
					return errors.New("a thread ended before the idle phase")
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	if err := waitPhase(phaseLoad); err != nil {
		return err
	}
	cpu0, t0 := proc.CPU(), time.Now()
	tasks := time.NewTicker(cfg.TaskEvery)
	stopTasks := make(chan struct{})
	tasksDone := make(chan struct{})
	go func() {
		defer close(tasksDone)
		for {
			select {
			case <-stopTasks:
				return
			case <-tasks.C:
				for _, w := range workers {
					_ = w.post(w.task(mono()))
				}
			}
		}
	}()
	err := waitPhase(phaseIdle)
	close(stopTasks)
	<-tasksDone
	tasks.Stop()
	if err != nil {
		return err
	}
	cpu1, t1 := proc.CPU(), time.Now()
	if err := waitPhase(phaseEnd); err != nil {
		return err
	}
	cpu2, t2 := proc.CPU(), time.Now()
	for ; finished < cfg.Threads; finished++ {
		if err := <-errs; err != nil {
			return err
		}
	}
	// Every thread has returned: its counters are ours to read.
	res := consumerResult{LoadCPU: cpu1 - cpu0, IdleCPU: cpu2 - cpu1, LoadWall: t1.Sub(t0), IdleWall: t2.Sub(t1),
		ThreadsEnded: seen[phaseEnd], Threads: cfg.Threads}
	lat := hdrhistogram.New(1, int64(time.Minute), 3)
	taskLat := hdrhistogram.New(1, int64(time.Minute), 3)
	for _, w := range workers {
		res.Received += w.received
		res.Gaps += w.gaps
		res.Dups += w.dups
		res.Tasks += w.tasks
		lat.Merge(w.lat)
		taskLat.Merge(w.taskLat)
	}
	res.P50, res.P99, res.Max = lat.ValueAtQuantile(50), lat.ValueAtQuantile(99), lat.Max()
	res.TaskP50, res.TaskP99 = taskLat.ValueAtQuantile(50), taskLat.ValueAtQuantile(99)
	return proc.Result(res)
}

// run is the thread: an event loop (kind "event") that sleeps in the kernel (futex) until
// a message, a posted task or a timer wakes it, or a poller. ready is closed once w.post
// may be called.
func (w *worker) run(ctx context.Context, kind string, r ring.Reader, poll time.Duration, phases chan<- phaseEvent, ready chan struct{}) error {
	if kind == "event" {
		l := loop.New(loop.Options{Wait: ring.Futex()})
		w.post = l.Post
		close(ready)
		_, err := l.Add(r, w.mux.Dispatch, func(err error) {
			w.endErr = err
			phases <- phaseEvent{w.i, phaseEnd}
			l.Stop()
		})
		if err != nil {
			return err
		}
		if err := l.Run(ctx); err != nil {
			return err
		}
		if !errors.Is(w.endErr, io.EOF) {
			return fmt.Errorf("thread %d: stream ended by %v", w.i, w.endErr)
		}
		return nil
	}
	p := &poller{}
	w.post = p.post
	close(ready)
	return w.pollWith(ctx, p, r, poll, phases)
}

// run is the parent: it starts the three processes, collects their results and prints
// the comparison.
func run(ctx context.Context, out io.Writer, cfg config) (err error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Load+cfg.Idle+60*time.Second) // never hang
	defer cancel()
	g, err := proc.NewGroup("workers", out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := g.Close(); err == nil {
			err = cerr
		}
	}()
	fmt.Fprintf(out, "segments: %s (removed at the end)\n", g.Dir)
	fmt.Fprintf(out, "workers: a producer process sends %d typed messages/s to each of %d threads in each of two consumer processes for %v, then nothing for %v\n",
		cfg.Rate, cfg.Threads, cfg.Load, cfg.Idle)
	fmt.Fprintf(out, "  consumer \"event\": each thread an event loop asleep in futex_waitv until a message or a posted task arrives\n")
	fmt.Fprintf(out, "  consumer \"poll\":  each thread takes what is there, runs its queued tasks, sleeps %v\n", cfg.Poll)
	fmt.Fprintf(out, "  each consumer's main goroutine posts a task to each of its threads every %v during the load\n", cfg.TaskEvery)

	ev, err := g.Start("event", cfg)
	if err != nil {
		return err
	}
	po, err := g.Start("poll", cfg)
	if err != nil {
		return err
	}
	pr, err := g.Start("producer", cfg)
	if err != nil {
		return err
	}
	var sent producerResult
	if err := pr.Result(ctx, &sent); err != nil {
		return err
	}
	var evRes, poRes consumerResult
	if err := ev.Result(ctx, &evRes); err != nil {
		return err
	}
	if err := po.Result(ctx, &poRes); err != nil {
		return err
	}
	for _, p := range []*proc.Proc{pr, ev, po} {
		if err := p.Wait(ctx); err != nil {
			return fmt.Errorf("%s: %v", p.Role, err)
		}
	}

	want := sent.PerThread * uint64(cfg.Threads)
	fmt.Fprintf(out, "\nsent: %d messages to each of %d threads per consumer (%d per consumer)\n\n", sent.PerThread, cfg.Threads, want)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "consumer\treceived\tmissing\tdup\tlatency p50\tp99\tmax\ttasks\ttask p50\ttask p99\tCPU load\t% core\tCPU idle\t% core\t")
	row := func(name string, r consumerResult) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, r.Received, r.Gaps, r.Dups,
			dur(r.P50), dur(r.P99), dur(r.Max), r.Tasks, dur(r.TaskP50), dur(r.TaskP99),
			dur(int64(r.LoadCPU)), pct(r.LoadCPU, r.LoadWall), dur(int64(r.IdleCPU)), pct(r.IdleCPU, r.IdleWall))
	}
	row("event", evRes)
	row("poll", poRes)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\npoll vs event: latency p50 %s, p99 %s; task p50 %s; CPU under load %s, idle %s\n",
		ratio(poRes.P50, evRes.P50), ratio(poRes.P99, evRes.P99), ratio(poRes.TaskP50, evRes.TaskP50),
		ratio(int64(poRes.LoadCPU), int64(evRes.LoadCPU)), ratio(int64(poRes.IdleCPU), int64(evRes.IdleCPU)))
	fmt.Fprintln(out, "(CPU is each consumer process's getrusage over the phase: its threads, the Go runtime's included)")

	var bad []string
	for _, c := range []struct {
		name string
		r    consumerResult
	}{{"event", evRes}, {"poll", poRes}} {
		if c.r.Received != want || c.r.Gaps != 0 || c.r.Dups != 0 {
			bad = append(bad, fmt.Sprintf("%s received %d of %d (%d missing, %d duplicated)", c.name, c.r.Received, want, c.r.Gaps, c.r.Dups))
		}
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	fmt.Fprintf(out, "every message accounted for: %d sent to each consumer, %d received by each, in order\n", want, want)
	return nil
}

// dur prints nanoseconds with three significant digits.
func dur(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", ns)
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(ns)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(ns)/1e6)
	default:
		return fmt.Sprintf("%.3gs", float64(ns)/1e9)
	}
}

func pct(cpu, wall time.Duration) string {
	if wall <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(cpu)/float64(wall))
}

func ratio(a, b int64) string {
	if b <= 0 {
		return "-"
	}
	r := float64(a) / float64(b)
	if r >= 10 {
		return fmt.Sprintf("%.0fx", r)
	}
	return fmt.Sprintf("%.2gx", r)
}
