//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// caseSpec is one measurement.
type caseSpec struct {
	Scenario, Transport, Wait string
	Size                      int
	Producers, Consumers      int
	Batch                     int // throughput: messages per publish (--batch); 1 otherwise
}

// bench runs cases; it owns a private segment directory and every child it starts.
type bench struct {
	cfg    config
	dir    string
	stderr io.Writer
	exe    string

	mu       sync.Mutex
	children map[*exec.Cmd]bool
	n        int // segments made, for unique names
}

func newBench(cfg config, stderr io.Writer) (*bench, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	dir, err := os.MkdirTemp(base, "shmbench-")
	if err != nil {
		return nil, err
	}
	return &bench{cfg: cfg, dir: dir, stderr: stderr, exe: exe, children: map[*exec.Cmd]bool{}}, nil
}

// cleanup kills and reaps every child still running and removes every segment.
func (b *bench) cleanup() {
	b.mu.Lock()
	for cmd := range b.children {
		_ = cmd.Process.Kill()
	}
	b.mu.Unlock()
	os.RemoveAll(b.dir)
}

// child is a started child process and where its report goes.
type child struct {
	cmd *exec.Cmd
	out bytes.Buffer
	err bytes.Buffer
}

func (b *bench) start(cfg childConfig, files ...*os.File) (*child, error) {
	raw, _ := json.Marshal(cfg)
	c := &child{cmd: exec.Command(b.exe)}
	c.cmd.Env = append(os.Environ(), envChild+"="+string(raw))
	c.cmd.ExtraFiles = files
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.err
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.children[c.cmd] = true
	b.mu.Unlock()
	return c, nil
}

// wait reaps the child (killing it after timeout) and decodes its report.
func (b *bench) wait(c *child, timeout time.Duration) (childReport, error) {
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-done
		err = fmt.Errorf("timed out after %v", timeout)
	}
	b.mu.Lock()
	delete(b.children, c.cmd)
	b.mu.Unlock()
	var rep childReport
	if jerr := json.Unmarshal(c.out.Bytes(), &rep); jerr != nil {
		return rep, fmt.Errorf("child: %v %v: %s", err, jerr, bytes.TrimSpace(c.err.Bytes()))
	}
	if rep.Err != "" {
		return rep, fmt.Errorf("child: %s", rep.Err)
	}
	return rep, err
}

// newSegment makes a ring segment sized for messages of size bytes (more for JSON, whose
// encoding is longer).
func (b *bench) newSegment(transport string, size int) (string, error) {
	if b.cfg.Codec == "json" {
		size = size*4/3 + 128 // base64 payload and field names
	}
	b.n++
	name := fmt.Sprintf("%s-%d", transport, b.n)
	spec := ring.Spec{Kind: ring.SPSC, Size: spinRingBytes(size)}
	if transport == "mpmc" {
		slot := shm.NextPow2(uint64(size + 16))
		spec = ring.Spec{Kind: ring.MPMC, Size: max(1<<20, slot*64), SlotSize: uint32(slot)}
	}
	seg, err := ring.Create(name, spec, shm.Options{Dir: b.dir})
	if err != nil {
		return "", err
	}
	return name, seg.Close()
}

// pair returns the two ends of a kernel transport: (write end, read end) for a pipe, two
// connected sockets otherwise.
func pair(transport string) (*os.File, *os.File, error) {
	switch transport {
	case "pipe":
		r, w, err := os.Pipe()
		return w, r, err
	case "unix":
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, nil, err
		}
		return os.NewFile(uintptr(fds[0]), "unix-a"), os.NewFile(uintptr(fds[1]), "unix-b"), nil
	case "tcp":
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		defer l.Close()
		dialed, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return nil, nil, err
		}
		accepted, err := l.Accept()
		if err != nil {
			dialed.Close()
			return nil, nil, err
		}
		a, err1 := dialed.(*net.TCPConn).File()
		c, err2 := accepted.(*net.TCPConn).File()
		dialed.Close()
		accepted.Close()
		if err1 != nil || err2 != nil {
			return nil, nil, fmt.Errorf("tcp: %v %v", err1, err2)
		}
		return a, c, nil
	}
	return nil, nil, fmt.Errorf("unknown transport %q", transport)
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// cpuFor spreads pinned hot threads over the CPUs: writers on 0, 2, ..., readers on 1, 3, ...
func (b *bench) cpuFor(i int) int {
	if !b.cfg.Pin || runtime.NumCPU() < 2 {
		return -1
	}
	return i % runtime.NumCPU()
}

func (b *bench) runCase(cs caseSpec) (Result, error) {
	res := Result{Scenario: cs.Scenario, Transport: cs.Transport, Wait: cs.Wait, Size: cs.Size,
		Producers: cs.Producers, Consumers: cs.Consumers, Batch: max(cs.Batch, 1)}
	if cs.Wait != "" {
		res.Wait = b.cfg.waitFor(cs.Wait).Name()
	}
	if cs.Transport == "floor" {
		res.Wait = "spin" // the floor only spins
	}
	base := childConfig{Scenario: cs.Scenario, Transport: cs.Transport, Dir: b.dir, Size: cs.Size,
		Duration: b.cfg.Duration, Rate: b.cfg.Rate, Batch: res.Batch, Codec: "raw"}
	if cs.Wait != "" {
		base.Wait = b.cfg.waitFor(cs.Wait).String()
		base.Codec = b.cfg.Codec // typed codecs run on the rings; the kernel's transports move bytes
	}
	res.Codec = base.Codec
	timeout := b.cfg.Duration + 60*time.Second
	if cs.Scenario == rpcScenario {
		return b.runRPC(cs, res)
	}
	if cs.Scenario == "pingpong" {
		return b.runPingPong(cs, base, res, timeout)
	}
	if isFanout(cs.Transport) {
		return b.runFanout(cs, base, res, timeout)
	}
	if cs.Transport == loopTransport {
		return b.runLoop(cs, base, res, timeout)
	}

	var writers, readers []*child
	killAll := func() {
		for _, c := range append(writers, readers...) {
			_ = c.cmd.Process.Kill()
		}
	}
	isRing := cs.Transport == "spsc" || cs.Transport == "mpmc"
	var closeRing func() error
	if isRing {
		name, err := b.newSegment(cs.Transport, cs.Size)
		if err != nil {
			return res, err
		}
		base.Ring = name
		if cs.Transport == "mpmc" {
			// The stream ends when its last writer closes. The parent holds a writer of its
			// own for the whole case, so that the end comes once every writer process is
			// done, however their starts and ends interleave.
			if closeRing, err = b.holdRing(name); err != nil {
				return res, err
			}
			defer func() {
				if closeRing != nil { // an early return: let go of the ring anyway
					_ = closeRing()
				}
			}()
		}
		for i := range cs.Consumers {
			cfg := base
			cfg.Role, cfg.CPU = "reader", b.cpuFor(2*i+1)
			c, err := b.start(cfg)
			if err != nil {
				killAll()
				return res, err
			}
			readers = append(readers, c)
		}
		for i := range cs.Producers {
			cfg := base
			cfg.Role, cfg.CPU, cfg.WriterID = "writer", b.cpuFor(2*i), uint32(i)
			c, err := b.start(cfg)
			if err != nil {
				killAll()
				return res, err
			}
			writers = append(writers, c)
		}
	} else {
		var w, r *os.File
		var err error
		if cs.Transport == "floor" {
			// One shared mapping, the same file for both.
			w, err = newFloorFile(floorData + floorCapacity(cs.Size)*cs.Size)
			r = w
		} else {
			w, r, err = pair(cs.Transport)
		}
		if err != nil {
			return res, err
		}
		cfg := base
		cfg.Role, cfg.CPU = "reader", b.cpuFor(1)
		rc, err := b.start(cfg, r)
		if err == nil {
			readers = append(readers, rc)
			cfg.Role, cfg.CPU = "writer", b.cpuFor(0)
			var wc *child
			if wc, err = b.start(cfg, w); err == nil {
				writers = append(writers, wc)
			}
		}
		closeAll(w, r) // the children hold their own copies (closing the floor's twice is harmless)
		if err != nil {
			killAll()
			return res, err
		}
	}

	var firstErr error
	var sent uint64
	for _, c := range writers {
		rep, err := b.wait(c, timeout)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("writer: %w", err)
		}
		sent += rep.Sent
		res.CPUSeconds.Writer += rep.CPU
	}
	if firstErr != nil {
		killAll()
	}
	if closeRing != nil {
		// Every writer has detached: closing the last one ends the stream, so that the
		// readers drain and stop.
		err := closeRing()
		closeRing = nil
		if err != nil && firstErr == nil {
			killAll()
			firstErr = err
		}
	}
	hist := newHistogram()
	var received uint64
	for _, c := range readers {
		rep, err := b.wait(c, timeout)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("reader: %w", err)
		}
		received += rep.Received
		res.Corrupt += rep.Corrupt
		res.CPUSeconds.Reader += rep.CPU
		res.Seconds = max(res.Seconds, rep.Seconds)
		if rep.Latency != nil {
			hist.Merge(hdrhistogram.Import(rep.Latency))
		}
	}
	if firstErr != nil {
		return res, firstErr
	}
	res.Messages = received
	if sent > received {
		res.Lost = sent - received
	}
	res.conclude(cs.Scenario, b.cfg.Duration, hist)
	return res, nil
}

// holdRing attaches an MPMC writer to name and returns the function that closes it (which
// ends the stream if it is the last writer) and lets the segment go.
func (b *bench) holdRing(name string) (func() error, error) {
	seg, err := shm.Open(name, shm.Options{Dir: b.dir})
	if err != nil {
		return nil, err
	}
	w, err := ring.NewMPMCWriter(seg, ring.Options{})
	if err != nil {
		seg.Close()
		return nil, err
	}
	return func() error {
		err := w.Close()
		if cerr := seg.Close(); err == nil {
			err = cerr
		}
		return err
	}, nil
}

func (b *bench) runPingPong(cs caseSpec, base childConfig, res Result, timeout time.Duration) (Result, error) {
	var pingerFiles, echoerFiles []*os.File
	switch cs.Transport {
	case "spsc", "mpmc":
		var err error
		if base.Ring, err = b.newSegment(cs.Transport, cs.Size); err != nil {
			return res, err
		}
		if base.Ring2, err = b.newSegment(cs.Transport, cs.Size); err != nil {
			return res, err
		}
	case "floor":
		f, err := newFloorFile(floorData) // the two words
		if err != nil {
			return res, err
		}
		pingerFiles, echoerFiles = []*os.File{f}, []*os.File{f}
	case "pipe":
		pingW, pingR, err := pair("pipe")
		if err != nil {
			return res, err
		}
		pongW, pongR, err := pair("pipe")
		if err != nil {
			closeAll(pingW, pingR)
			return res, err
		}
		pingerFiles = []*os.File{pingW, pongR}
		echoerFiles = []*os.File{pingR, pongW}
	default:
		a, c, err := pair(cs.Transport)
		if err != nil {
			return res, err
		}
		pingerFiles, echoerFiles = []*os.File{a}, []*os.File{c}
	}
	defer closeAll(append(pingerFiles, echoerFiles...)...)
	cfg := base
	cfg.Role, cfg.CPU = "echoer", b.cpuFor(1)
	echoer, err := b.start(cfg, echoerFiles...)
	if err != nil {
		return res, err
	}
	cfg.Role, cfg.CPU = "pinger", b.cpuFor(0)
	pinger, err := b.start(cfg, pingerFiles...)
	if err != nil {
		_ = echoer.cmd.Process.Kill()
		_, _ = b.wait(echoer, timeout)
		return res, err
	}
	closeAll(append(pingerFiles, echoerFiles...)...)
	prep, perr := b.wait(pinger, timeout)
	if perr != nil {
		_ = echoer.cmd.Process.Kill()
	}
	erep, eerr := b.wait(echoer, timeout)
	if perr != nil {
		return res, fmt.Errorf("pinger: %w", perr)
	}
	if eerr != nil {
		return res, fmt.Errorf("echoer: %w", eerr)
	}
	res.Messages = prep.Received
	res.Corrupt = prep.Corrupt
	if prep.Sent > prep.Received {
		res.Lost = prep.Sent - prep.Received
	}
	res.Seconds = prep.Seconds
	res.CPUSeconds.Writer, res.CPUSeconds.Reader = prep.CPU, erep.CPU
	if prep.Latency != nil {
		res.Latency = latencyOf(hdrhistogram.Import(prep.Latency))
	}
	res.finish()
	return res, nil
}

// conclude fills what a case's scenario reports besides counts (the idle CPU, the latency
// percentiles) and finishes the result.
func (r *Result) conclude(scenario string, d time.Duration, hist *hdrhistogram.Histogram) {
	switch scenario {
	case "idle":
		r.Seconds = d.Seconds()
		r.IdleCPUPercent = 100 * r.CPUSeconds.Reader / r.Seconds
	case "latency":
		r.Latency = latencyOf(hist)
	}
	r.finish()
}

func latencyOf(h *hdrhistogram.Histogram) *Latency {
	if h.TotalCount() == 0 {
		return nil
	}
	return &Latency{P50: h.ValueAtQuantile(50), P90: h.ValueAtQuantile(90), P99: h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9), Max: h.Max()}
}
