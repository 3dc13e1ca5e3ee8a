// Package supervise keeps N copies of a worker process running: it starts them from a
// factory, restarts one that exits abnormally (or is killed) after a backoff delay, scales
// the count at run time, and stops them all gracefully. It knows nothing of what the
// workers do.
//
// Worker i (0 <= i < N) is made by factory(i), a fresh *exec.Cmd for every start. A worker
// that exits with status 0 is done (it is not restarted, unless Options.Always); one that
// exits with another status, is killed by a signal, or cannot be started is restarted
// after Options.Restart's delay for its number of consecutive failures, until
// Restart.MaxAttempts consecutive failures (then it stays down: an event GaveUp). A run
// that lasted Options.StableAfter resets the count.
//
// Stopping a worker (Scale down, Stop) sends SIGTERM, then SIGKILL after Options.Grace.
// Every child is reaped by the goroutine that started it, and Stop returns only when every
// child has been reaped, so a Supervisor leaks no process. On Linux each worker also gets
// a parent-death signal (SIGKILL) unless the factory set SysProcAttr, so that the workers
// die with a supervisor that is killed before it can Stop. Unless the factory set
// exec.Cmd.WaitDelay, it is set to Grace: a worker whose own children keep its output
// pipes open is reaped at most Grace after it exits (Wait's exec.ErrWaitDelay, a failure
// unless the worker was being stopped). Those children are the worker's to end.
package supervise

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/shmq/shmq/backoff"
)

// Defaults for the zero fields of Options.
const (
	DefaultGrace       = 5 * time.Second
	DefaultStableAfter = 10 * time.Second
)

// Options configures a Supervisor. The zero value is valid.
type Options struct {
	// Workers is the number of workers New starts.
	Workers int
	// Restart gives the delay before a restart: Restart.Delay(k) after the k-th
	// consecutive failure; Restart.MaxAttempts > 0 gives up on a worker after that many.
	// The zero value is backoff's defaults (100 ms, doubling, up to 30 s, never giving
	// up); a constant delay d is backoff.Policy{Base: d, Factor: 1}.
	Restart backoff.Policy
	// Always restarts workers that exit with status 0 as well (after Restart.Base).
	Always bool
	// Grace is how long a worker has between SIGTERM and SIGKILL; 0 means DefaultGrace.
	Grace time.Duration
	// StableAfter is how long a worker must run for its failure count to start again from
	// zero; 0 means DefaultStableAfter.
	StableAfter time.Duration
	// OnEvent, if not nil, is called for every event, one call at a time, from the
	// supervisor's goroutines. It must return promptly and must not call Scale or Stop.
	OnEvent func(Event)
}

// EventKind says what happened to a worker.
type EventKind uint8

const (
	Started     EventKind = iota + 1 // a worker process was started (PID)
	StartFailed                      // the factory or exec failed (Err); counts as a failure
	Exited                           // a worker process exited and was reaped
	Restarting                       // a restart is scheduled after Delay
	GaveUp                           // Restart.MaxAttempts consecutive failures: the worker stays down
)

func (k EventKind) String() string {
	switch k {
	case Started:
		return "started"
	case StartFailed:
		return "start-failed"
	case Exited:
		return "exited"
	case Restarting:
		return "restarting"
	case GaveUp:
		return "gave-up"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event reports one change of a worker.
type Event struct {
	Kind   EventKind
	Worker int       // the worker's index
	Time   time.Time // when it happened
	PID    int       // Started, Exited: the process
	// Err is the cause of StartFailed, and for Exited what exec.Cmd.Wait returned (an
	// *exec.ExitError for a non-zero status or a signal, nil for status 0).
	Err      error
	ExitCode int            // Exited: the exit status, -1 if a signal ended it
	Signal   syscall.Signal // Exited: the signal that ended it, 0 if none
	Stopped  bool           // Exited: stopped by Scale or Stop, not a failure
	Uptime   time.Duration  // Exited: how long it ran
	Failures int            // consecutive failures of this worker so far
	Delay    time.Duration  // Restarting: the wait before the next start
}

// Stats are the supervisor's counters since New.
type Stats struct {
	Desired  int    // workers asked for (New, then the last Scale)
	Live     int    // worker processes running now (stopping ones included)
	Starts   uint64 // processes started
	Restarts uint64 // of Starts, those that replaced an earlier process of the same worker
	Exits    uint64 // processes reaped
	Failures uint64 // abnormal exits and failed starts (stops by Scale or Stop excluded)
	GaveUp   uint64 // workers given up after Restart.MaxAttempts consecutive failures
}

// WorkerInfo describes one running worker process.
type WorkerInfo struct {
	Index int
	PID   int
	Since time.Time
}

// Supervisor runs the workers. Its methods are safe for concurrent use by multiple
// goroutines.
type Supervisor struct {
	factory     func(i int) *exec.Cmd
	bo          *backoff.Backoff
	always      bool
	grace       time.Duration
	stableAfter time.Duration
	onEvent     func(Event)

	evMu sync.Mutex // serialises onEvent

	mu       sync.Mutex
	slots    []*slot // slots[i] runs worker i; len(slots) == Desired
	retiring []*slot // slots being stopped by Scale, until they are done
	stopping bool
	stopDone chan struct{} // closed when the first Stop has reaped everything
	stats    Stats
	wg       sync.WaitGroup // one per slot goroutine
}

// slot is one worker index's goroutine and its current process.
type slot struct {
	index int
	prev  *slot         // the retiring slot of the same index, started after it is done
	stop  chan struct{} // closed: stop gracefully (SIGTERM, then SIGKILL after grace)
	kill  chan struct{} // closed: SIGKILL now
	done  chan struct{} // closed when the goroutine has ended, its child reaped

	// under Supervisor.mu
	stopClosed, killClosed bool
	pid                    int
	since                  time.Time
}

// New validates opts and starts opts.Workers workers (a worker that fails to start is
// retried like one that crashed, so New itself does not fail for it). Errors wrap
// ErrInvalid: a nil factory, a negative count or duration, an invalid Restart policy.
func New(factory func(i int) *exec.Cmd, opts Options) (*Supervisor, error) {
	switch {
	case factory == nil:
		return nil, fmt.Errorf("%w: nil factory", ErrInvalid)
	case opts.Workers < 0:
		return nil, fmt.Errorf("%w: Workers %d is negative", ErrInvalid, opts.Workers)
	case opts.Grace < 0:
		return nil, fmt.Errorf("%w: Grace %v is negative", ErrInvalid, opts.Grace)
	case opts.StableAfter < 0:
		return nil, fmt.Errorf("%w: StableAfter %v is negative", ErrInvalid, opts.StableAfter)
	}
	bo, err := backoff.New(opts.Restart, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: Restart: %w", ErrInvalid, err)
	}
	s := &Supervisor{
		factory:     factory,
		bo:          bo,
		always:      opts.Always,
		grace:       opts.Grace,
		stableAfter: opts.StableAfter,
		onEvent:     opts.OnEvent,
		stopDone:    make(chan struct{}),
	}
	if s.grace == 0 {
		s.grace = DefaultGrace
	}
	if s.stableAfter == 0 {
		s.stableAfter = DefaultStableAfter
	}
	s.mu.Lock()
	s.scaleLocked(opts.Workers)
	s.mu.Unlock()
	return s, nil
}

// Scale sets the number of workers to n. Workers 0..n-1 run afterwards: missing ones are
// started (a worker that gave up or finished with status 0 is started again), and the
// highest-numbered workers beyond n are stopped gracefully (SIGTERM, then SIGKILL after
// Grace). Scale returns once those have been reaped, or when ctx ends (ctx.Err(); they are
// still stopped and reaped, and Stop waits for them). It returns ErrStopped after Stop has
// begun and an error wrapping ErrInvalid for a negative n.
func (s *Supervisor) Scale(ctx context.Context, n int) error {
	if n < 0 {
		return fmt.Errorf("%w: Scale(%d)", ErrInvalid, n)
	}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return ErrStopped
	}
	removed := s.scaleLocked(n)
	s.mu.Unlock()
	for _, sl := range removed {
		select {
		case <-sl.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// scaleLocked makes slots 0..n-1 run and retires the rest, returning the retired slots.
func (s *Supervisor) scaleLocked(n int) []*slot {
	var removed []*slot
	for len(s.slots) > n {
		sl := s.slots[len(s.slots)-1]
		s.slots = s.slots[:len(s.slots)-1]
		s.stopSlotLocked(sl)
		s.retiring = append(s.retiring, sl)
		removed = append(removed, sl)
	}
	for i := range n {
		if i < len(s.slots) && !isDone(s.slots[i]) {
			continue
		}
		sl := &slot{index: i, stop: make(chan struct{}), kill: make(chan struct{}), done: make(chan struct{})}
		for _, r := range s.retiring { // the newest retiring slot of this index, if any
			if r.index == i {
				sl.prev = r
			}
		}
		if i < len(s.slots) {
			sl.prev = s.slots[i] // done already: nothing to wait for, but harmless
			s.slots[i] = sl
		} else {
			s.slots = append(s.slots, sl)
		}
		s.wg.Add(1)
		go s.run(sl)
	}
	s.stats.Desired = n
	return removed
}

func isDone(sl *slot) bool {
	select {
	case <-sl.done:
		return true
	default:
		return false
	}
}

func (s *Supervisor) stopSlotLocked(sl *slot) {
	if !sl.stopClosed {
		sl.stopClosed = true
		close(sl.stop)
	}
}

func (s *Supervisor) killSlotLocked(sl *slot) {
	s.stopSlotLocked(sl)
	if !sl.killClosed {
		sl.killClosed = true
		close(sl.kill)
	}
}

// Stop stops every worker gracefully (SIGTERM, then SIGKILL after Grace, or at once when
// ctx ends) and returns once every worker process has been reaped; no event follows its
// return. It returns ctx.Err() if ctx ended first (the workers were then killed, and still
// reaped before Stop returned), else nil. Stop may be called any number of times, from any
// goroutine: later calls wait for the first to finish, and return nil, or kill the workers
// at once if their own ctx ends first and return ctx.Err() once they are reaped.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		select {
		case <-s.stopDone:
			return nil
		case <-ctx.Done():
		}
		s.mu.Lock()
		for _, sl := range append(append([]*slot(nil), s.slots...), s.retiring...) {
			s.killSlotLocked(sl)
		}
		s.mu.Unlock()
		<-s.stopDone
		return ctx.Err()
	}
	s.stopping = true
	all := append(append([]*slot(nil), s.slots...), s.retiring...)
	for _, sl := range all {
		s.stopSlotLocked(sl)
	}
	s.stats.Desired = 0
	s.mu.Unlock()

	waited := make(chan struct{})
	go func() { s.wg.Wait(); close(waited) }()
	var err error
	select {
	case <-waited:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for _, sl := range all {
			s.killSlotLocked(sl)
		}
		s.mu.Unlock()
		<-waited
	}
	close(s.stopDone)
	return err
}

// Live is the number of worker processes running now, those being stopped included.
func (s *Supervisor) Live() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.Live
}

// Stats returns a copy of the counters.
func (s *Supervisor) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Workers lists the worker processes running now, by index (a worker's successor of the
// same index starts only once the stopped one is reaped).
func (s *Supervisor) Workers() []WorkerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []WorkerInfo
	for _, sl := range append(append([]*slot(nil), s.slots...), s.retiring...) {
		if sl.pid != 0 {
			out = append(out, WorkerInfo{Index: sl.index, PID: sl.pid, Since: sl.since})
		}
	}
	return out
}

func (s *Supervisor) emit(ev Event) {
	if s.onEvent == nil {
		return
	}
	ev.Time = time.Now()
	s.evMu.Lock()
	defer s.evMu.Unlock()
	s.onEvent(ev)
}

// run is slot sl's goroutine: start, wait, restart, until stopped or given up. It ends
// only with no child of its own running.
func (s *Supervisor) run(sl *slot) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		if i := indexOf(s.retiring, sl); i >= 0 {
			s.retiring = append(s.retiring[:i], s.retiring[i+1:]...)
		}
		close(sl.done)
		s.mu.Unlock()
	}()
	if sl.prev != nil {
		select {
		case <-sl.prev.done:
		case <-sl.stop:
			// A later slot of the index may wait for this one: it must not start before
			// the process this one waited for is reaped. prev is stopped (it retires), so
			// this ends.
			<-sl.prev.done
			return
		}
	}
	failures, starts := 0, 0
	for {
		select {
		case <-sl.stop:
			return
		default:
		}
		ok, runFor := s.runOnce(sl, &failures, &starts)
		if !ok {
			return // stopped
		}
		if runFor == 0 && failures == 0 && !s.always {
			return // exited with status 0: done
		}
		delay, retry := s.bo.Next(failures)
		if failures == 0 {
			delay, retry = s.bo.Ceiling(1), true // Always: a clean exit restarts after Base
		}
		if !retry {
			s.mu.Lock()
			s.stats.GaveUp++
			s.mu.Unlock()
			s.emit(Event{Kind: GaveUp, Worker: sl.index, Failures: failures})
			return
		}
		s.emit(Event{Kind: Restarting, Worker: sl.index, Failures: failures, Delay: delay})
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-sl.stop:
			t.Stop()
			return
		}
	}
}

// runOnce starts one process for sl and waits for it to exit (stopping it if sl is
// stopped). It returns false if sl was stopped, and otherwise 0 for a clean exit and 1 for
// a failure (failures counts consecutive ones).
func (s *Supervisor) runOnce(sl *slot, failures, starts *int) (bool, int) {
	cmd := s.factory(sl.index)
	var err error
	if cmd == nil || cmd.Process != nil {
		err = ErrNilCommand
	} else {
		setParentDeathSignal(cmd)
		if cmd.WaitDelay == 0 {
			// Wait also waits for the copying of the worker's output, which a child of the
			// worker can hold open forever: bound it, so the worker's exit is seen.
			cmd.WaitDelay = s.grace
		}
		err = cmd.Start()
	}
	if err != nil {
		*failures++
		s.mu.Lock()
		s.stats.Failures++
		s.mu.Unlock()
		s.emit(Event{Kind: StartFailed, Worker: sl.index, Err: err, Failures: *failures})
		return true, 1
	}
	pid, since := cmd.Process.Pid, time.Now()
	s.mu.Lock()
	sl.pid, sl.since = pid, since
	s.stats.Live++
	s.stats.Starts++
	if *starts > 0 {
		s.stats.Restarts++
	}
	s.mu.Unlock()
	*starts++
	s.emit(Event{Kind: Started, Worker: sl.index, PID: pid, Failures: *failures})

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	select {
	case err = <-exited:
	case <-sl.stop:
		stopped = true
		err = s.terminate(sl, cmd, exited)
	}
	uptime := time.Since(since)
	ev := Event{Kind: Exited, Worker: sl.index, PID: pid, Err: err, Stopped: stopped, Uptime: uptime, ExitCode: -1}
	if st := cmd.ProcessState; st != nil {
		ev.ExitCode = st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ev.Signal = ws.Signal()
		}
	}
	failed := !stopped && err != nil
	if failed {
		if uptime >= s.stableAfter {
			*failures = 0
		}
		*failures++
	} else if !stopped {
		*failures = 0
	}
	ev.Failures = *failures
	s.mu.Lock()
	sl.pid = 0
	s.stats.Live--
	s.stats.Exits++
	if failed {
		s.stats.Failures++
	}
	s.mu.Unlock()
	s.emit(ev)
	if stopped {
		return false, 0
	}
	if failed {
		return true, 1
	}
	return true, 0
}

// terminate sends SIGTERM, waits up to grace (or until sl.kill), then SIGKILLs, and
// returns Wait's result once the process is reaped.
func (s *Supervisor) terminate(sl *slot, cmd *exec.Cmd, exited <-chan error) error {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(s.grace)
	defer t.Stop()
	select {
	case err := <-exited:
		return err
	case <-t.C:
	case <-sl.kill:
	}
	_ = cmd.Process.Kill()
	return <-exited
}

func indexOf(list []*slot, sl *slot) int {
	for i, x := range list {
		if x == sl {
			return i
		}
	}
	return -1
}
