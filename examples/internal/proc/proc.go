// Package proc runs the processes of shmq's examples. An example re-executes its own
// binary in a named role (the environment variable SHMQ_EXAMPLE_ROLE says which), so one
// `go run ./examples/NAME` starts every process it needs.
//
// The parent side is a Group: a temporary segment directory and the children started in
// it. Group.Close SIGKILLs and reaps every child still running and removes the directory;
// an example calls it on every way out (defer), and children also get a parent-death
// signal (Linux), so a parent killed outright leaves no process behind.
//
// A child talks back on its standard output, one line per message: Ready (Proc.Ready
// returns) and Result (a JSON value for Proc.Result). Anything else it prints, and its
// standard error, goes to the group's log with the child's role and pid in front.
//
// Unlike internal/proctest, which is for tests, this package is for programs: nothing in
// it needs a testing.T. An example's test runs the example's parent code in the test
// binary, whose TestMain dispatches the roles like main does (RunChild).
package proc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	envRole   = "SHMQ_EXAMPLE_ROLE"
	envDir    = "SHMQ_EXAMPLE_DIR"
	envConfig = "SHMQ_EXAMPLE_CONFIG"

	linePrefix = "shmq-example "
	lineReady  = linePrefix + "ready"
	lineResult = linePrefix + "result "
)

// ErrExited is returned by Proc.Ready and Proc.Result when the child exited without
// sending what was waited for.
var ErrExited = errors.New("child exited")

// Role is the role this process was started in by Group.Start or Group.Command, or ""
// in a parent.
func Role() string { return os.Getenv(envRole) }

// Dir is, in a child, its group's segment directory.
func Dir() string { return os.Getenv(envDir) }

// Config decodes into v the configuration the parent passed to Start or Command.
func Config(v any) error {
	s := os.Getenv(envConfig)
	if s == "" {
		return errors.New("proc: no configuration in the environment")
	}
	return json.Unmarshal([]byte(s), v)
}

// RunChild runs the function of this process's role with a context that ends at SIGTERM
// or SIGINT, and returns the exit status: 0 when it returned nil, 1 (after printing the
// error to standard error) otherwise, 2 for a role not in roles.
func RunChild(roles map[string]func(ctx context.Context) error) int {
	fn, ok := roles[Role()]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown role %q\n", Role())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := fn(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", Role(), err)
		return 1
	}
	return 0
}

// Ready tells the parent that this child is set up: the parent's Proc.Ready returns.
func Ready() { fmt.Fprintln(os.Stdout, lineReady) }

// Result sends v, as JSON, to the parent, which decodes it with Proc.Result.
func Result(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(os.Stdout, "%s%s\n", lineResult, b)
	return err
}

// Group is a parent's temporary segment directory and the children it started. Its
// methods are safe for concurrent use.
type Group struct {
	// Dir is the temporary directory: give it to shm.Options.Dir, bus.Config.Dir,
	// broker.Options.Dir.
	Dir string

	log     io.Writer
	logMu   sync.Mutex
	mu      sync.Mutex
	procs   []*Proc
	closed  bool
	closeMu sync.Once
}

// NewGroup makes a temporary directory for the example name, in /dev/shm (a tmpfs, where
// segments belong) if there is one, else in os.TempDir. Children's output goes to log.
func NewGroup(name string, log io.Writer) (*Group, error) {
	parent := "/dev/shm"
	if st, err := os.Stat(parent); err != nil || !st.IsDir() {
		parent = os.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "shmq-example-"+name+"-")
	if err != nil {
		return nil, err
	}
	return &Group{Dir: dir, log: log}, nil
}

// Start runs this program again in role, with cfg (encoded as JSON) for the child's
// Config. The child is the group's: Close kills and reaps it if it still runs.
func (g *Group) Start(role string, cfg any) (*Proc, error) {
	p := newProc(role)
	cmd, err := g.command(role, cfg, p)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("proc: group closed")
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.cmd = cmd
	p.pid.Store(int64(cmd.Process.Pid)) // the output copies may run already
	g.procs = append(g.procs, p)
	go func() {
		err := cmd.Wait() // waits for the output copies too
		p.out.flush()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Command is Start for a supervisor that starts, waits for and reaps the child itself
// (package supervise): it returns the command, not started, and the Proc that its output
// feeds (Ready, Result and TryResult work; Wait and Signal do not). label names the child
// in the log (its pid is not known here). The command has a parent-death signal and a
// process group of its own, like Start's children.
func (g *Group) Command(role, label string, cfg any) (*exec.Cmd, *Proc, error) {
	p := newProc(role)
	cmd, err := g.command(role, cfg, p)
	if err != nil {
		return nil, nil, err
	}
	p.out.role, p.errw.role = label, label
	return cmd, p, nil
}

func (g *Group) command(role string, cfg any, p *Proc) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envRole+"="+role, envDir+"="+g.Dir, envConfig+"="+string(b))
	p.out = &lineWriter{g: g, p: p, role: role, stdout: true}
	p.errw = &lineWriter{g: g, p: p, role: role}
	cmd.Stdout, cmd.Stderr = p.out, p.errw
	setSysProcAttr(cmd)
	return cmd, nil
}

// Close SIGKILLs every child of Start still running, reaps it, and removes the directory
// with whatever is left in it. Safe to call any number of times; later calls do nothing.
func (g *Group) Close() error {
	var err error
	g.closeMu.Do(func() {
		g.mu.Lock()
		g.closed = true
		procs := g.procs
		g.mu.Unlock()
		for _, p := range procs {
			select {
			case <-p.done:
			default:
				_ = p.cmd.Process.Signal(syscall.SIGKILL)
				<-p.done
			}
		}
		err = os.RemoveAll(g.Dir)
	})
	return err
}

func (g *Group) logLine(role string, pid int, line []byte) {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	if pid == 0 {
		fmt.Fprintf(g.log, "  [%s] %s\n", role, line)
		return
	}
	fmt.Fprintf(g.log, "  [%s %d] %s\n", role, pid, line)
}

// Proc is a child process.
type Proc struct {
	Role string

	cmd  *exec.Cmd
	pid  atomic.Int64
	out  *lineWriter
	errw *lineWriter

	ready     chan struct{}
	readyOnce sync.Once
	results   chan []byte
	done      chan struct{}
	mu        sync.Mutex
	err       error
}

func newProc(role string) *Proc {
	return &Proc{Role: role, ready: make(chan struct{}), results: make(chan []byte, 64), done: make(chan struct{})}
}

// Pid is the child's process id (0 for a Command not started by the group).
func (p *Proc) Pid() int { return int(p.pid.Load()) }

// Ready waits until the child called Ready. ErrExited if it exited first; ctx's error.
func (p *Proc) Ready(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	case <-p.done:
		select {
		case <-p.ready:
			return nil
		default:
		}
		return fmt.Errorf("%s: %w before it was ready: %v", p.Role, ErrExited, p.exitErr())
	case <-ctx.Done():
		return fmt.Errorf("%s: not ready: %w", p.Role, ctx.Err())
	}
}

// Result waits for the child's next Result and decodes it into v. ErrExited if it exited
// without sending one; ctx's error.
func (p *Proc) Result(ctx context.Context, v any) error {
	var b []byte
	select {
	case b = <-p.results:
	case <-p.done:
		select {
		case b = <-p.results:
		default:
			return fmt.Errorf("%s: %w without a result: %v", p.Role, ErrExited, p.exitErr())
		}
	case <-ctx.Done():
		return fmt.Errorf("%s: no result: %w", p.Role, ctx.Err())
	}
	return json.Unmarshal(b, v)
}

// TryResult decodes the child's next Result into v if it has sent one (true), without
// waiting. Once a child has been reaped, everything it printed has been read.
func (p *Proc) TryResult(v any) (bool, error) {
	select {
	case b := <-p.results:
		return true, json.Unmarshal(b, v)
	default:
		return false, nil
	}
}

// Signal sends sig to the child (a child of Start), unless it has exited.
func (p *Proc) Signal(sig os.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
		return p.cmd.Process.Signal(sig)
	}
}

// Wait waits until the child of Start has exited and been reaped, and returns what
// exec.Cmd.Wait said (nil for status 0); ctx's error if it ends first.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.exitErr()
	case <-ctx.Done():
		return fmt.Errorf("%s: still running: %w", p.Role, ctx.Err())
	}
}

func (p *Proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// lineWriter splits a child's output into lines: on standard output the protocol's lines
// go to the Proc, everything else to the group's log.
type lineWriter struct {
	g      *Group
	p      *Proc
	role   string
	stdout bool
	mu     sync.Mutex
	buf    []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.line(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(b), nil
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.line(w.buf)
		w.buf = nil
	}
}

func (w *lineWriter) line(l []byte) {
	pid := w.p.Pid()
	if w.stdout {
		s := string(l)
		switch {
		case s == lineReady:
			w.p.readyOnce.Do(func() { close(w.p.ready) })
			return
		case strings.HasPrefix(s, lineResult):
			select {
			case w.p.results <- []byte(s[len(lineResult):]):
			default:
				w.g.logLine(w.role, pid, []byte("result dropped: "+strconv.Quote(s)))
			}
			return
		}
	}
	w.g.logLine(w.role, pid, l)
}

// CPU is this process's CPU time so far, user plus system, from getrusage(RUSAGE_SELF):
// every thread of the process, the Go runtime's included.
func CPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
