// Command buffered runs a buffered job queue on the event bus (package bus): jobs emitted
// with priorities, handled by a pool of worker processes with retries and backoff, the
// hopeless ones ending in the dead-letter queue.
//
//	go run ./examples/buffered
//
// This process emits jobs faster than two workers can handle them, at three priorities
// (Critical, Normal, Low). The workers are processes, kept running by package supervise;
// each is a Reliable subscriber of the same subscription, "jobs", so each job goes to one
// of them. A few jobs fail once (retried after a backoff), a few always fail (after
// MaxAttempts they go to the dead-letter queue, with their last error), and one makes its
// worker crash: the supervisor restarts that worker after a delay, and the job it held is
// delivered again to another worker. While the backlog grows the pool is scaled from two
// workers to four (Supervisor.Scale). Each worker reports every job it completed on the
// bus (a "done" event to this process's own Reliable subscription); at the end this
// process checks that every job was completed or dead-lettered, and prints the queue wait
// by priority, each worker's statistics, the supervisor's, and the bus's health.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shmq/shmq/backoff"
	"github.com/shmq/shmq/bus"
	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/examples/internal/proc"
	"github.com/shmq/shmq/supervise"
)

const busName = "jobs"

// config is what this process passes to its workers (and uses itself).
type config struct {
	Jobs        int           // how many jobs to emit
	Rate        int           // jobs per second
	Work        time.Duration // what a job takes a worker
	ScaleAfter  int           // jobs emitted before the pool grows from 2 to 4 workers
	CrashAt     int           // the job that crashes its worker (at its first attempt)
	MaxAttempts int           // attempts before the dead-letter queue
	Restart     time.Duration // the supervisor's delay before restarting a crashed worker
	Index       int           // a worker's index (set per worker)
}

func defaultConfig() config {
	return config{Jobs: 1600, Rate: 800, Work: 4 * time.Millisecond, ScaleAfter: 600, CrashAt: 800,
		MaxAttempts: 4, Restart: 500 * time.Millisecond}
}

// Job is one unit of work.
type Job struct {
	Seq       uint64
	Poison    uint32 // fails at every attempt: ends in the dead-letter queue
	Transient uint32 // fails at its first attempt only
	Crash     uint32 // kills its worker at its first attempt
	_         uint32
}

// Done is a worker's report of a completed job.
type Done struct {
	Seq      uint64
	Attempt  uint32
	Worker   uint32
	Pid      uint32
	Priority uint32
	WaitNs   int64 // publish to the start of the successful attempt
}

// kind decides, from its sequence number, what a job does.
func kind(seq int) (poison, transient bool) {
	return seq%97 == 13, seq%10 == 7
}

// priority spreads jobs over the lanes: 10% Critical, 50% Normal, 40% Low.
func priority(seq int) envelope.Priority {
	switch r := seq % 10; {
	case r == 0:
		return envelope.Critical
	case r <= 5:
		return envelope.Normal
	default:
		return envelope.Low
	}
}

var roles = map[string]func(context.Context) error{"worker": worker}

func main() {
	if proc.Role() != "" {
		os.Exit(proc.RunChild(roles))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, defaultConfig())
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "buffered:", err)
		os.Exit(1)
	}
}

func openBus(dir, source string) (*bus.Bus, error) {
	b, err := bus.Open(busName, bus.Config{Dir: dir, Source: source, QueueFull: bus.BlockWhenFull})
	if err != nil {
		return nil, err
	}
	jobs, err := codec.NewFixed[Job]()
	if err != nil {
		b.Close()
		return nil, err
	}
	dones, err := codec.NewFixed[Done]()
	if err != nil {
		b.Close()
		return nil, err
	}
	if err := errors.Join(bus.Register(b, "job", codec.Codec[Job](jobs)), bus.Register(b, "done", codec.Codec[Done](dones))); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// workerResult is what a worker reports when the supervisor stops it.
type workerResult struct {
	Index, Pid int
	Stats      bus.Stats
	Shutdown   bus.ShutdownReport
}

// worker handles jobs from the "jobs" subscription until SIGTERM, then shuts down
// gracefully (the job in hand is finished) and reports its statistics.
func worker(ctx context.Context) error {
	var cfg config
	if err := proc.Config(&cfg); err != nil {
		return err
	}
	b, err := openBus(proc.Dir(), fmt.Sprintf("worker-%d", cfg.Index))
	if err != nil {
		return err
	}
	defer b.Close()
	sub, err := bus.Subscribe(b, func(hctx context.Context, ev *envelope.View, j *Job) error {
		wait := time.Now().UnixNano() - ev.Time
		job := *j // j points into shared memory, valid during this call: a copy is cheap
		switch {
		case job.Crash == 1 && ev.Attempt == 1:
			fmt.Fprintf(os.Stderr, "crashing on job %d (attempt %d)\n", job.Seq, ev.Attempt)
			os.Exit(3)
		case job.Transient == 1 && ev.Attempt == 1:
			return fmt.Errorf("job %d: transient failure", job.Seq)
		}
		select {
		case <-time.After(cfg.Work):
		case <-hctx.Done():
			return hctx.Err()
		}
		if job.Poison == 1 {
			return fmt.Errorf("job %d: input rejected", job.Seq)
		}
		_, err := bus.Publish(hctx, b, &Done{Seq: job.Seq, Attempt: ev.Attempt, Worker: uint32(cfg.Index),
			Pid: uint32(os.Getpid()), Priority: uint32(ev.Priority), WaitNs: wait})
		return err // nil: the job is acknowledged
	}, bus.Delivery(bus.Reliable{Name: "jobs", Timeout: 2 * time.Second}),
		bus.WithRetry(bus.Retry{MaxAttempts: cfg.MaxAttempts, Base: 20 * time.Millisecond, Factor: 2, Cap: 200 * time.Millisecond, Jitter: 0.2}))
	if err != nil {
		return err
	}
	proc.Ready()
	<-ctx.Done() // SIGTERM: the supervisor stops us
	rep, err := b.Shutdown(context.Background())
	if err != nil {
		return err
	}
	return proc.Result(workerResult{Index: cfg.Index, Pid: os.Getpid(), Stats: sub.Stats(), Shutdown: rep})
}

// run emits the jobs, supervises the workers and accounts for every job.
func run(ctx context.Context, out io.Writer, cfg config) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second) // never hang
	defer cancel()
	g, err := proc.NewGroup("buffered", out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := g.Close(); err == nil {
			err = cerr
		}
	}()
	start := time.Now()
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, "  %5.2fs  "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	fmt.Fprintf(out, "segments: %s (removed at the end)\n", g.Dir)

	b, err := openBus(g.Dir, "emitter")
	if err != nil {
		return err
	}
	defer b.Close()
	// The workers report completed jobs to this Reliable subscription.
	var (
		mu    sync.Mutex
		dones []Done
	)
	results, err := bus.Subscribe(b, func(_ context.Context, _ *envelope.View, d *Done) error {
		mu.Lock()
		dones = append(dones, *d)
		mu.Unlock()
		return nil
	}, bus.Delivery(bus.Reliable{Name: "results"}))
	if err != nil {
		return err
	}

	// The worker pool.
	var (
		procsMu sync.Mutex
		procs   []*proc.Proc
		ready   = make(chan struct{}, 64)
		exits   = map[int]string{} // pid → how it ended
	)
	factory := func(i int) *exec.Cmd {
		wcfg := cfg
		wcfg.Index = i
		cmd, p, err := g.Command("worker", fmt.Sprintf("worker-%d", i), wcfg)
		if err != nil {
			return nil // the supervisor counts it as a failed start and retries
		}
		procsMu.Lock()
		procs = append(procs, p)
		procsMu.Unlock()
		go func() {
			if p.Ready(ctx) == nil {
				ready <- struct{}{}
			}
		}()
		return cmd
	}
	sup, err := supervise.New(factory, supervise.Options{
		Workers: 2,
		Restart: backoff.Policy{Base: cfg.Restart, Factor: 1},
		Grace:   10 * time.Second,
		OnEvent: func(e supervise.Event) {
			switch e.Kind {
			case supervise.Started:
				say("supervisor: worker %d started (pid %d)", e.Worker, e.PID)
			case supervise.Exited:
				how := "stopped"
				if !e.Stopped {
					how = fmt.Sprintf("crashed (%v)", e.Err)
					say("supervisor: worker %d (pid %d) %s after %v", e.Worker, e.PID, how, e.Uptime.Round(time.Millisecond))
				}
				procsMu.Lock()
				exits[e.PID] = how
				procsMu.Unlock()
			case supervise.Restarting:
				say("supervisor: restarting worker %d in %v", e.Worker, e.Delay)
			case supervise.StartFailed, supervise.GaveUp:
				say("supervisor: worker %d: %v %v", e.Worker, e.Kind, e.Err)
			}
		},
	})
	if err != nil {
		return err
	}
	defer sup.Stop(context.Background()) // on every way out: SIGTERM, then SIGKILL, all reaped
	for range 2 {
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	// Emit, scaling the pool up once the backlog has grown.
	var emitted [envelope.Priorities]int
	poison := map[uint64]bool{}
	transient := 0
	every := 10 * time.Millisecond
	perTick := max(1, cfg.Rate*int(every)/int(time.Second))
	say("emitting %d jobs at %d/s (10%% Critical, 50%% Normal, 40%% Low); each takes a worker %v", cfg.Jobs, cfg.Rate, cfg.Work)
	t := time.NewTicker(every)
	for seq := 0; seq < cfg.Jobs; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		for n := 0; n < perTick && seq < cfg.Jobs; n++ {
			p, tr := kind(seq)
			j := Job{Seq: uint64(seq), Poison: b2u(p), Transient: b2u(tr && !p), Crash: b2u(seq == cfg.CrashAt)}
			if _, err := bus.Publish(ctx, b, &j, bus.WithPriority(priority(seq))); err != nil {
				return err
			}
			emitted[priority(seq)]++
			if p {
				poison[uint64(seq)] = true
			} else if tr {
				transient++
			}
			seq++
			if seq == cfg.ScaleAfter {
				if err := printHealth(out, &outMu, b, say, "before scaling"); err != nil {
					return err
				}
				say("scaling the pool from 2 to 4 worker processes")
				if err := sup.Scale(ctx, 4); err != nil {
					return err
				}
			}
		}
	}
	t.Stop()
	say("emitted %d jobs: %d Critical, %d Normal, %d Low (%d fail once, %d always fail, job %d crashes its worker)",
		cfg.Jobs, emitted[envelope.Critical], emitted[envelope.Normal], emitted[envelope.Low], transient, len(poison), cfg.CrashAt)

	// Wait until every job is completed or dead-lettered.
	var h bus.Health
	for {
		if h, err = b.Health(); err != nil {
			return err
		}
		mu.Lock()
		distinct := map[uint64]bool{}
		for _, d := range dones {
			distinct[d.Seq] = true
		}
		mu.Unlock()
		if len(distinct)+int(h.DeadLetters) >= cfg.Jobs {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d jobs completed and %d dead-lettered of %d: %w", len(distinct), h.DeadLetters, cfg.Jobs, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	say("every job completed or dead-lettered")
	if err := printHealth(out, &outMu, b, say, "all jobs done"); err != nil {
		return err
	}
	if err := sup.Stop(ctx); err != nil {
		return err
	}
	say("supervisor stopped every worker (SIGTERM: each finished its job in hand and reported)")
	ss := sup.Stats()
	rs := results.Stats()

	// What each worker process reported.
	var workers []workerResult
	procsMu.Lock()
	for _, p := range procs {
		var wr workerResult
		if ok, err := p.TryResult(&wr); err != nil {
			procsMu.Unlock()
			return err
		} else if ok {
			workers = append(workers, wr)
		}
	}
	crashed := 0
	for _, how := range exits {
		if how != "stopped" {
			crashed++
		}
	}
	procsMu.Unlock()
	sort.Slice(workers, func(i, j int) bool { return workers[i].Index < workers[j].Index })

	// The accounting.
	mu.Lock()
	done := append([]Done(nil), dones...)
	mu.Unlock()
	times := map[uint64]int{}
	var retried, afterCrash int
	byPrio := [envelope.Priorities]*hdrhistogram.Histogram{}
	completed := [envelope.Priorities]int{}
	for p := range byPrio {
		byPrio[p] = hdrhistogram.New(1, int64(time.Minute), 3)
	}
	for _, d := range done {
		times[d.Seq]++
		if times[d.Seq] > 1 {
			continue
		}
		completed[d.Priority]++
		switch {
		case d.Seq == uint64(cfg.CrashAt) && d.Attempt > 1:
			afterCrash++
		case d.Attempt > 1:
			retried++
		default:
			_ = byPrio[d.Priority].RecordValue(max(d.WaitNs, 1))
		}
	}
	twice := 0
	wrong := 0
	for seq, n := range times {
		if n > 1 {
			twice++
		}
		if poison[seq] {
			wrong++
		}
	}
	lost := cfg.Jobs - len(times) - int(h.DeadLetters)

	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "priority\temitted\tcompleted\tfirst-attempt wait p50\tp99\t")
	for p := range envelope.Priorities {
		fmt.Fprintf(tw, "%v\t%d\t%d\t%s\t%s\t\n", envelope.Priority(p), emitted[p], completed[p],
			dur(byPrio[p].ValueAtQuantile(50)), dur(byPrio[p].ValueAtQuantile(99)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "worker\tpid\tdelivered\tfailed\tretried\tdead-lettered\tavg handler\tended\t")
	for _, w := range workers {
		s := w.Stats
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%v\t%s\t\n", w.Index, w.Pid, s.Delivered, s.Failed, s.Retried, s.DeadLettered,
			s.AvgHandler.Round(10*time.Microsecond), exits[w.Pid])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "worker processes that crashed: %d (their statistics died with them)\n", crashed)
	fmt.Fprintf(out, "supervisor: %d starts, %d restarts, %d failures\n", ss.Starts, ss.Restarts, ss.Failures)
	fmt.Fprintf(out, "results subscription: %d done events delivered\n", rs.Delivered)
	fmt.Fprintf(out, "dead-letter queue: %d events\n", h.DeadLetters)
	fmt.Fprintf(out, "jobs: %d emitted = %d completed (%d after a retry, %d after its worker crashed) + %d dead-lettered; %d lost, %d completed twice\n",
		cfg.Jobs, len(times), retried, afterCrash, h.DeadLetters, lost, twice)

	var bad []error
	if lost != 0 || wrong != 0 {
		bad = append(bad, fmt.Errorf("%d jobs lost, %d poison jobs completed", lost, wrong))
	}
	if int(h.DeadLetters) != len(poison) {
		bad = append(bad, fmt.Errorf("%d dead letters, want the %d poison jobs", h.DeadLetters, len(poison)))
	}
	if err := errors.Join(bad...); err != nil {
		return err
	}
	fmt.Fprintln(out, "every job accounted for")
	return nil
}

func printHealth(out io.Writer, mu *sync.Mutex, b *bus.Bus, say func(string, ...any), when string) error {
	h, err := b.Health()
	if err != nil {
		return err
	}
	say("health (%s): %s", when, h.State)
	mu.Lock()
	defer mu.Unlock()
	for _, q := range h.Queues {
		fmt.Fprintf(out, "           queue %-7s depth %4d of %d, fullest lane %3.0f%%, worker endpoints %d\n",
			q.Subscription, q.Depth, q.Capacity, 100*q.Utilisation, q.Workers)
	}
	for _, r := range h.Reasons {
		sub := r.Subscription
		if sub != "" {
			sub += ": "
		}
		fmt.Fprintf(out, "           %s %s: %s%s\n", r.State, r.Check, sub, r.Detail)
	}
	return nil
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

func dur(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(ns)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(ns)/1e6)
	default:
		return fmt.Sprintf("%.3gs", float64(ns)/1e9)
	}
}
