// Package proctest runs the other side of a cross-process test in a real process: the test
// binary re-executes itself in a named role (the os/exec TestMain pattern).
//
// A test package registers its roles and calls Main from TestMain:
//
//	func TestMain(m *testing.M) {
//		proctest.Register("writer", runWriter)
//		proctest.Main(m)
//	}
//
// A test then starts a child with Start, which kills and reaps it in t.Cleanup whatever
// happens. The child talks back over a private pipe: Point marks a named step (the parent
// can wait for it, and the child can be told to SIGKILL itself there), Result sends a value
// the parent decodes. Extra files (a segment's descriptor, a socket) are passed with
// cmd.ExtraFiles, never by fixed paths.
package proctest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	envRole   = "SHMQ_PROCTEST_ROLE"
	envKillAt = "SHMQ_PROCTEST_KILL_AT"
	ctlFD     = 3 // first of cmd.ExtraFiles
)

// RoleFunc is the body of a child process. Returning nil exits 0; an error is printed to
// stderr and exits 1.
type RoleFunc func(c *Child) error

var roles = map[string]RoleFunc{}

// Register names a role. Call it from TestMain (or init) before Main, in the parent and the
// child alike: both run the same binary.
func Register(name string, fn RoleFunc) {
	if _, dup := roles[name]; dup {
		panic("proctest: role registered twice: " + name)
	}
	roles[name] = fn
}

// Main runs the role named in the environment if this process is a child, and the tests
// otherwise. It never returns.
func Main(m *testing.M) {
	name, isChild := os.LookupEnv(envRole)
	if !isChild {
		os.Exit(m.Run())
	}
	fn, ok := roles[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "proctest: unknown role %q\n", name)
		os.Exit(2)
	}
	c := &Child{Args: os.Args[1:], ctl: os.NewFile(ctlFD, "proctest-ctl"), killAt: os.Getenv(envKillAt)}
	if err := fn(c); err != nil {
		fmt.Fprintf(os.Stderr, "proctest: role %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Child is the handle a role receives. Its methods may be called from one goroutine at a time.
type Child struct {
	// Args are the arguments the parent passed in Options.Args.
	Args   []string
	ctl    *os.File
	killAt string
}

// File returns the i-th file the parent passed in Options.Files, or nil if there is none.
func (c *Child) File(i int) *os.File {
	return os.NewFile(uintptr(ctlFD+1+i), fmt.Sprintf("proctest-file-%d", i))
}

// Point reports that the child reached the named step. If the parent started it with
// Options.KillAt equal to name, the child kills itself with SIGKILL right after reporting,
// so Point does not return: the process dies exactly there, as if killed from outside.
func (c *Child) Point(name string) {
	fmt.Fprintf(c.ctl, "point %s\n", name)
	if c.killAt == name {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL cannot be caught; wait for it to land
	}
}

// Result sends v, encoded as JSON, to the parent, which reads it with Proc.Result.
func (c *Child) Result(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.ctl, "result %s\n", b)
	return err
}

// Options configures a child process.
type Options struct {
	Args   []string   // passed to the role as Child.Args
	Env    []string   // added to the parent's environment
	Files  []*os.File // passed to the child, which reads them with Child.File(i)
	KillAt string     // the child SIGKILLs itself when it reaches Point(KillAt)
}

// Proc is a running child. Its methods are safe for concurrent use.
type Proc struct {
	t    testing.TB
	role string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when the process has exited and its pipe is drained

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever points or results grow
	points  map[string]bool
	results [][]byte
	waitErr error
}

// Start runs role in a new child process. The child is killed with SIGKILL and reaped in
// t.Cleanup if it is still running then, and also if the test binary itself dies (Linux's
// parent-death signal).
func Start(t testing.TB, role string, opts Options) *Proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("proctest: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatalf("proctest: %v", err)
	}
	cmd := exec.Command(exe, opts.Args...)
	cmd.Env = append(os.Environ(), envRole+"="+role, envKillAt+"="+opts.KillAt)
	cmd.Env = append(cmd.Env, opts.Env...)
	cmd.ExtraFiles = append([]*os.File{w}, opts.Files...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		t.Fatalf("proctest: start %s: %v", role, err)
	}
	w.Close()
	p := &Proc{t: t, role: role, cmd: cmd, out: out, done: make(chan struct{}),
		changed: make(chan struct{}), points: map[string]bool{}}
	go p.readControl(r)
	t.Cleanup(func() {
		p.Kill()
		<-p.done
		if t.Failed() && out.Len() > 0 {
			t.Logf("output of child %s (pid %d):\n%s", role, cmd.Process.Pid, out.String())
		}
	})
	return p
}

func (p *Proc) readControl(r *os.File) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		kind, arg, _ := strings.Cut(sc.Text(), " ")
		p.mu.Lock()
		switch kind {
		case "point":
			p.points[arg] = true
		case "result":
			p.results = append(p.results, []byte(arg))
		}
		p.notifyLocked()
		p.mu.Unlock()
	}
	r.Close()
	err := p.cmd.Wait()
	p.mu.Lock()
	p.waitErr = err
	p.notifyLocked()
	p.mu.Unlock()
}

func (p *Proc) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Pid is the child's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output is everything the child wrote to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

// WaitPoint blocks until the child reports Point(name). It fails the test if the child
// exits first or timeout passes.
func (p *Proc) WaitPoint(name string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		seen, ch := p.points[name], p.changed
		p.mu.Unlock()
		if seen {
			return
		}
		select {
		case <-ch:
		case <-p.done:
			p.mu.Lock()
			seen = p.points[name]
			p.mu.Unlock()
			if !seen {
				p.t.Fatalf("child %s exited before point %q: %v\n%s", p.role, name, p.waitErr, p.Output())
			}
			return
		case <-deadline:
			p.t.Fatalf("child %s did not reach point %q within %v\n%s", p.role, name, timeout, p.Output())
		}
	}
}

// Wait blocks until the child exits or timeout passes (then it kills the child and fails
// the test). It returns nil for exit status 0 and otherwise an error that includes the
// child's output.
func (p *Proc) Wait(timeout time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.Kill()
		<-p.done
		p.t.Fatalf("child %s still running after %v; killed\n%s", p.role, timeout, p.Output())
	}
	if p.waitErr != nil {
		return fmt.Errorf("child %s: %w\n%s", p.role, p.waitErr, p.Output())
	}
	return nil
}

// Killed reports whether the child has exited because of SIGKILL.
func (p *Proc) Killed() bool {
	select {
	case <-p.done:
	default:
		return false
	}
	var ee *exec.ExitError
	if !errors.As(p.waitErr, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// CPU returns the user plus system CPU time the child used, once it has exited (0 before).
func (p *Proc) CPU() time.Duration {
	select {
	case <-p.done:
	default:
		return 0
	}
	if p.cmd.ProcessState == nil {
		return 0
	}
	return p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
}

// Kill sends SIGKILL to the child if it is still running. It does not wait; Wait or the
// test's cleanup reaps it.
func (p *Proc) Kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
	}
}

// Result decodes the i-th result the child sent into v, waiting up to timeout for it.
func (p *Proc) Result(i int, v any, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		n, ch := len(p.results), p.changed
		var b []byte
		if i < n {
			b = p.results[i]
		}
		p.mu.Unlock()
		if b != nil {
			return json.Unmarshal(b, v)
		}
		select {
		case <-ch:
		case <-p.done:
			p.mu.Lock()
			n = len(p.results)
			p.mu.Unlock()
			if i >= n {
				return fmt.Errorf("child %s exited after %d results, wanted #%d: %v", p.role, n, i, p.waitErr)
			}
		case <-deadline:
			return fmt.Errorf("child %s sent no result #%d within %v", p.role, i, timeout)
		}
	}
}

// Command returns an unstarted command that runs role in a new process of this binary, for
// a child that starts children of its own (there is no testing.TB in a child). The new
// process's Point and Result go nowhere; its caller must kill and reap it.
func Command(role string, args ...string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), envRole+"="+role, envKillAt+"=")
	cmd.ExtraFiles = []*os.File{devNull}
	setParentDeathSignal(cmd)
	return cmd, nil
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of os/exec's copiers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}
