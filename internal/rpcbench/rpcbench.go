//go:build linux

package rpcbench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/shmq/shmq/shm"
)

// Caller makes one call: it sends req and appends the reply to dst.
type Caller func(ctx context.Context, dst, req []byte) ([]byte, error)

// Transport is one way of calling between processes. Serve runs in the server process and
// Dial in the caller process.
type Transport struct {
	Name string
	// Serve serves calls in dir (every request comes back as its reply) until ctx ends; it
	// calls ready once callers can dial. workers is how many calls it may serve at once,
	// where the transport has a setting for it.
	Serve func(ctx context.Context, dir string, opts Options, ready func()) error
	// Dial returns n callers, each for one goroutine, and a function that closes them.
	Dial func(ctx context.Context, dir string, n int, opts Options) ([]Caller, func(), error)
}

// Options are what a case tells both sides.
type Options struct {
	Wait    string // shmq: the rings' wait strategy (ring.ParseWait); empty for the others
	Workers int    // shmq: the server's handler goroutines per connection
}

// Case is one measurement.
type Case struct {
	Transport string
	Wait      string        // shmq: ring wait strategy
	Callers   int           // goroutines calling at once (shmq, grpc: on one connection; unix: one connection each)
	Workers   int           // shmq: server handler goroutines (0: 1 for one caller, else 4)
	Size      int           // request and reply bytes (at least 16)
	Duration  time.Duration // measured time, after a warm-up of Duration/4 (at most 1 s)
}

// MinSize is the smallest message: a caller id and a sequence number.
const MinSize = 16

// Result is a measured case.
type Result struct {
	Case
	Calls       uint64  `json:"calls"`
	Seconds     float64 `json:"seconds"`
	CallsPerSec float64 `json:"calls_per_sec"`
	// Round-trip latency of one call, in nanoseconds, over every call of the measured time.
	P50  int64 `json:"p50_ns"`
	P90  int64 `json:"p90_ns"`
	P99  int64 `json:"p99_ns"`
	P999 int64 `json:"p999_ns"`
	Max  int64 `json:"max_ns"`
	// CPU seconds (user and system) of each process during the measured time.
	CallerCPU float64 `json:"caller_cpu_seconds"`
	ServerCPU float64 `json:"server_cpu_seconds"`
	// Bad counts replies that were not their request's echo. Must be 0.
	Bad uint64 `json:"bad"`
}

// CPUPerCall is the CPU both processes spent per call, in nanoseconds.
func (r Result) CPUPerCall() float64 {
	if r.Calls == 0 {
		return 0
	}
	return (r.CallerCPU + r.ServerCPU) * 1e9 / float64(r.Calls)
}

// envChild holds the JSON childSpec of a re-executed process.
const envChild = "SHMQ_RPCBENCH_CHILD"

type childSpec struct {
	Role string // server, caller
	Case Case
	Dir  string
}

// childReport is what a child prints last, as one JSON line.
type childReport struct {
	Calls   uint64
	Bad     uint64
	Seconds float64
	CPU     float64
	Latency *hdrhistogram.Snapshot
	Err     string
}

// ChildMain runs the role of a re-executed process and exits, if this process is one;
// otherwise it returns false at once.
func ChildMain(transports ...Transport) bool {
	raw, ok := os.LookupEnv(envChild)
	if !ok {
		return false
	}
	var spec childSpec
	rep := childReport{}
	err := json.Unmarshal([]byte(raw), &spec)
	if err == nil {
		var tr Transport
		tr, err = find(transports, spec.Case.Transport)
		if err == nil {
			if spec.Role == "server" {
				rep, err = runServer(tr, spec)
			} else {
				rep, err = runCaller(tr, spec)
			}
		}
	}
	if err != nil {
		rep.Err = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(rep)
	os.Exit(0)
	return true
}

func find(transports []Transport, name string) (Transport, error) {
	for _, t := range transports {
		if t.Name == name {
			return t, nil
		}
	}
	return Transport{}, fmt.Errorf("rpcbench: unknown transport %q", name)
}

func (c Case) options() Options {
	w := c.Workers
	if w <= 0 {
		w = 1
		if c.Callers > 1 {
			w = 4
		}
	}
	return Options{Wait: c.Wait, Workers: w}
}

func cpuSeconds() float64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// runServer serves until its stdin ends; a line "mark" on stdin starts its CPU count.
func runServer(tr Transport, spec childSpec) (childReport, error) {
	var rep childReport
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- tr.Serve(ctx, spec.Dir, spec.Case.options(), func() { fmt.Println("ready") })
	}()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	cpu0 := cpuSeconds()
	for {
		select {
		case err := <-served:
			return rep, fmt.Errorf("server stopped: %v", err)
		case line, ok := <-lines:
			if !ok {
				rep.CPU = cpuSeconds() - cpu0
				return rep, nil
			}
			if line == "mark" {
				cpu0 = cpuSeconds()
			}
		}
	}
}

// runCaller dials, warms up, prints "start", calls for the case's duration from every
// caller goroutine and reports.
func runCaller(tr Transport, spec childSpec) (childReport, error) {
	var rep childReport
	cs := spec.Case
	ctx, cancel := context.WithTimeout(context.Background(), cs.Duration+2*time.Minute)
	defer cancel()
	callers, closeAll, err := tr.Dial(ctx, spec.Dir, cs.Callers, cs.options())
	if err != nil {
		return rep, fmt.Errorf("dial: %w", err)
	}
	defer closeAll()
	warm := min(cs.Duration/4, time.Second)
	if _, err := callFor(ctx, callers, cs.Size, warm, nil); err != nil {
		return rep, fmt.Errorf("warm-up: %w", err)
	}
	fmt.Println("start")
	cpu0 := cpuSeconds()
	t0 := time.Now()
	hist := hdrhistogram.New(1, int64(time.Minute), 3)
	st, err := callFor(ctx, callers, cs.Size, cs.Duration, hist)
	rep.Seconds = time.Since(t0).Seconds()
	rep.CPU = cpuSeconds() - cpu0
	rep.Calls, rep.Bad = st.calls, st.bad
	rep.Latency = hist.Export()
	return rep, err
}

type callStats struct{ calls, bad uint64 }

// callFor calls from every caller at once until d has passed, checking every reply and,
// with hist, recording every call's round trip. Each request carries its caller's id and
// sequence number, so a reply given to the wrong call is counted as bad.
func callFor(ctx context.Context, callers []Caller, size int, d time.Duration, hist *hdrhistogram.Histogram) (callStats, error) {
	var (
		mu    sync.Mutex
		total callStats
		first error
		wg    sync.WaitGroup
	)
	end := time.Now().Add(d)
	for id, call := range callers {
		wg.Go(func() {
			req := make([]byte, size)
			for i := 16; i < size; i++ {
				req[i] = byte(id*7 + i)
			}
			reply := make([]byte, 0, size)
			var h *hdrhistogram.Histogram
			if hist != nil {
				h = hdrhistogram.New(1, int64(time.Minute), 3)
			}
			var st callStats
			var err error
			for seq := uint64(0); ; seq++ {
				binary.LittleEndian.PutUint64(req, uint64(id))
				binary.LittleEndian.PutUint64(req[8:], seq)
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				reply, err = call(ctx, reply[:0], req)
				if err != nil {
					break
				}
				if h != nil {
					_ = h.RecordValue(max(int64(time.Since(t0)), 1))
				}
				st.calls++
				if !bytes.Equal(reply, req) {
					st.bad++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			total.calls += st.calls
			total.bad += st.bad
			if h != nil {
				hist.Merge(h)
			}
			if err != nil && first == nil {
				first = fmt.Errorf("caller %d: %w", id, err)
			}
		})
	}
	wg.Wait()
	return total, first
}

// Run measures one case: a server process, then a caller process, both this binary
// re-executed (ChildMain), in a fresh directory under /dev/shm that is removed after. Both
// children are killed and reaped whatever happens.
func Run(cs Case) (Result, error) {
	res := Result{Case: cs}
	switch {
	case cs.Callers < 1:
		return res, errors.New("rpcbench: at least one caller")
	case cs.Size < MinSize:
		return res, fmt.Errorf("rpcbench: messages of at least %d bytes", MinSize)
	case cs.Duration <= 0:
		return res, errors.New("rpcbench: a positive duration")
	}
	exe, err := os.Executable()
	if err != nil {
		return res, err
	}
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	dir, err := os.MkdirTemp(base, "rpcbench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	timeout := cs.Duration + 2*time.Minute

	srv, err := startChild(exe, childSpec{Role: "server", Case: cs, Dir: dir})
	if err != nil {
		return res, err
	}
	defer srv.kill()
	if line, err := srv.line(timeout); err != nil || line != "ready" {
		return res, fmt.Errorf("server: not ready (%q, %v): %s", line, err, srv.stderr())
	}
	caller, err := startChild(exe, childSpec{Role: "caller", Case: cs, Dir: dir})
	if err != nil {
		return res, err
	}
	defer caller.kill()
	if line, err := caller.line(timeout); err != nil || line != "start" {
		rep, _ := caller.report(time.Second)
		return res, fmt.Errorf("caller: did not start (%q, %v) %s: %s", line, err, rep.Err, caller.stderr())
	}
	_, _ = io.WriteString(srv.stdin, "mark\n")
	crep, err := caller.report(timeout)
	if err != nil {
		return res, fmt.Errorf("caller: %w", err)
	}
	srv.stdin.Close()
	srep, err := srv.report(timeout)
	if err != nil {
		return res, fmt.Errorf("server: %w", err)
	}
	res.Calls, res.Bad, res.Seconds = crep.Calls, crep.Bad, crep.Seconds
	res.CallerCPU, res.ServerCPU = crep.CPU, srep.CPU
	if res.Seconds > 0 {
		res.CallsPerSec = float64(res.Calls) / res.Seconds
	}
	if crep.Latency != nil {
		h := hdrhistogram.Import(crep.Latency)
		res.P50, res.P90, res.P99, res.P999, res.Max = h.ValueAtQuantile(50), h.ValueAtQuantile(90), h.ValueAtQuantile(99), h.ValueAtQuantile(99.9), h.Max()
	}
	if res.Bad != 0 {
		return res, fmt.Errorf("%d replies were not their request's echo", res.Bad)
	}
	return res, nil
}

// child is a running child process.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	errBuf *syncBuffer
	lines  chan string
	done   chan struct{}
}

func startChild(exe string, spec childSpec) (*child, error) {
	raw, _ := json.Marshal(spec)
	c := &child{cmd: exec.Command(exe), errBuf: &syncBuffer{}, lines: make(chan string, 4), done: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), envChild+"="+string(raw))
	c.cmd.Stderr = c.errBuf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		_ = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// line returns the child's next line of output.
func (c *child) line(timeout time.Duration) (string, error) {
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "", errors.New("exited")
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("nothing within %v", timeout)
	}
}

// report reads the child's report, its last line.
func (c *child) report(timeout time.Duration) (childReport, error) {
	var rep childReport
	l, err := c.line(timeout)
	if err != nil {
		return rep, fmt.Errorf("no report: %v: %s", err, c.stderr())
	}
	if err := json.Unmarshal([]byte(l), &rep); err != nil {
		return rep, fmt.Errorf("report %q: %v: %s", l, err, c.stderr())
	}
	if rep.Err != "" {
		return rep, errors.New(rep.Err)
	}
	return rep, nil
}

// kill ends the child if it still runs and reaps it.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	for range c.lines {
	}
	<-c.done
}

func (c *child) stderr() string { return strings.TrimSpace(c.errBuf.String()) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
