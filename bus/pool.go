package bus

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/shmq/shmq/backoff"
	"github.com/shmq/shmq/supervise"
)

// Worker processes: a WorkerPool runs N processes that each Subscribe to one Reliable
// subscription, so that they share its queue (each event goes to one of them), under a
// supervisor (package supervise). A process that crashes is started again after
// PoolConfig.RestartDelay; the event it held is delivered again to another worker (the MPMC
// queue gives a dead reader's record back), as its next attempt. Scaling down stops the
// highest-numbered workers with SIGTERM: a worker that runs Serve finishes the event in
// hand and stops, so that no event is lost or handled twice by the change. With the
// Fallback option a subscription in the publishing process handles the events while no
// worker process is alive.

// Environment of a worker process, set by the WorkerPool.
const (
	EnvWorkerIndex  = "SHMQ_BUS_WORKER"       // the worker's index, from 0
	EnvSubscription = "SHMQ_BUS_SUBSCRIPTION" // PoolConfig.Subscription
)

// PoolConfig configures a WorkerPool.
type PoolConfig struct {
	// Subscription is the Reliable subscription the workers serve (they Subscribe with
	// Reliable{Name: Subscription}; the pool tells them in SHMQ_BUS_SUBSCRIPTION).
	Subscription string
	// Command makes the command of worker i (0 <= i < workers), a fresh one at every
	// start. The pool adds SHMQ_DIR (the bus's directory), SHMQ_BUS_WORKER and
	// SHMQ_BUS_SUBSCRIPTION to its environment (cmd.Env, or this process's when nil).
	Command func(i int) *exec.Cmd
	// Workers is the number of processes to start (default 1).
	Workers int
	// RestartDelay is the wait before a crashed worker is started again, growing ×2 with
	// each crash in a row up to 30 × RestartDelay (default 1s).
	RestartDelay time.Duration
	// Grace is how long a stopped worker has between SIGTERM and SIGKILL (default 5s).
	Grace time.Duration
	// OnEvent, if not nil, is told of every start, exit and restart (see supervise.Options).
	OnEvent func(supervise.Event)
}

// WorkerPool is a running pool of worker processes. Its methods are safe for concurrent use.
type WorkerPool struct {
	sup *supervise.Supervisor
	sub string
}

// StartWorkers starts cfg.Workers processes serving the Reliable subscription
// cfg.Subscription of b. It returns at once; the processes subscribe when they are up.
// Errors: ErrConfig for a bad name, a nil Command, negative numbers; ErrShuttingDown.
func StartWorkers(b *Bus, cfg PoolConfig) (*WorkerPool, error) {
	if b.closing.Load() {
		return nil, ErrShuttingDown
	}
	switch {
	case !validSubName(cfg.Subscription):
		return nil, fmt.Errorf("%w: PoolConfig.Subscription %q", ErrConfig, cfg.Subscription)
	case cfg.Command == nil:
		return nil, fmt.Errorf("%w: PoolConfig.Command is nil", ErrConfig)
	case cfg.Workers < 0 || cfg.RestartDelay < 0 || cfg.Grace < 0:
		return nil, fmt.Errorf("%w: PoolConfig %d workers, restart delay %v, grace %v", ErrConfig, cfg.Workers, cfg.RestartDelay, cfg.Grace)
	}
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	if cfg.RestartDelay == 0 {
		cfg.RestartDelay = time.Second
	}
	dir := b.opts.ResolvedDir()
	factory := func(i int) *exec.Cmd {
		cmd := cfg.Command(i)
		if cmd == nil {
			return nil
		}
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, "SHMQ_DIR="+dir, EnvWorkerIndex+"="+strconv.Itoa(i), EnvSubscription+"="+cfg.Subscription)
		return cmd
	}
	sup, err := supervise.New(factory, supervise.Options{
		Workers: cfg.Workers,
		Restart: backoff.Policy{Base: cfg.RestartDelay, Factor: 2, Cap: 30 * cfg.RestartDelay},
		Grace:   cfg.Grace,
		OnEvent: cfg.OnEvent,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return &WorkerPool{sup: sup, sub: cfg.Subscription}, nil
}

// ScaleWorkers sets the number of worker processes to n: missing ones start, the
// highest-numbered ones beyond n are stopped (SIGTERM, then SIGKILL after Grace). It
// returns once those have exited, or when ctx ends (ctx's error; they are still stopped).
// ErrConfig for n < 0; ErrShuttingDown after Stop.
func (p *WorkerPool) ScaleWorkers(ctx context.Context, n int) error {
	if n < 0 {
		return fmt.Errorf("%w: ScaleWorkers(%d)", ErrConfig, n)
	}
	if err := p.sup.Scale(ctx, n); err != nil {
		if err == supervise.ErrStopped {
			return ErrShuttingDown
		}
		return err
	}
	return nil
}

// Live is the number of worker processes running now.
func (p *WorkerPool) Live() int { return p.sup.Live() }

// Stats are the pool's process counters: starts, restarts, exits, failures.
func (p *WorkerPool) Stats() supervise.Stats { return p.sup.Stats() }

// Stop stops every worker process (SIGTERM, then SIGKILL after Grace, or at once when ctx
// ends) and returns once all have exited: ctx's error if it ended first. Events left in the
// queue stay there. Safe to call any number of times.
func (p *WorkerPool) Stop(ctx context.Context) error { return p.sup.Stop(ctx) }

// Serve is the main loop of a worker process: it waits until the process gets SIGTERM or
// SIGINT (a WorkerPool stopping it) or ctx ends, then shuts b down gracefully (Shutdown):
// the events in hand are finished and acknowledged, the rest stay queued for the other
// workers. It returns Shutdown's report.
func Serve(ctx context.Context, b *Bus) (ShutdownReport, error) {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	return b.Shutdown(context.Background())
}
