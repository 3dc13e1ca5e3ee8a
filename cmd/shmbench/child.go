//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/shmq/shmq/internal/rpcbench"
	"github.com/shmq/shmq/ring"
)

// envChild holds the JSON childConfig of a re-executed shmbench process.
const envChild = "SHMBENCH_CHILD"

// childConfig is what the parent tells a writer, reader, pinger or echoer process.
type childConfig struct {
	Role      string // writer, reader, pinger, echoer
	Scenario  string
	Transport string
	Wait      string
	Codec     string // raw, fixed, json (rings only)
	Dir       string
	Ring      string // segment the writer writes (ring transports)
	Ring2     string // pingpong: segment the echoer answers on
	Size      int
	Duration  time.Duration
	Rate      int
	Batch     int // throughput: messages per publish, write or read (--batch)
	WriterID  uint32
	CPU       int // pin the hot thread to this CPU; -1: no pinning

	Fanout *fanoutConfig `json:",omitempty"` // pubsub, fanout-spsc (pubsub.go)
}

// childReport is what a child prints on stdout, as one JSON line.
type childReport struct {
	Sent      uint64
	Received  uint64
	Corrupt   uint64
	Seconds   float64 // reader: first to last message
	CPU       float64 // CPU seconds (user+system) during the measured phase
	Latency   *hdrhistogram.Snapshot
	PerWriter map[uint32]uint64 // reader: messages received per writer
	Missed    uint64            // pubsub subscriber: records overwritten before it read them
	Err       string
}

// childMain runs a child role if this process is one, and reports whether it was.
func childMain() bool {
	if rpcbench.ChildMain(rpcbench.Builtin()...) { // an rpc scenario's server or caller
		return true
	}
	raw, ok := os.LookupEnv(envChild)
	if !ok {
		return false
	}
	var cfg childConfig
	rep := childReport{}
	err := json.Unmarshal([]byte(raw), &cfg)
	if err == nil {
		rep, err = runGuardedChild(cfg)
	}
	if err != nil {
		rep.Err = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(rep)
	os.Exit(0)
	return true
}

func cpuSeconds() float64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// pin locks the calling goroutine to its thread and that thread to cpu.
func pin(cpu int) error {
	if cpu < 0 {
		return nil
	}
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	return unix.SchedSetaffinity(0, &set)
}

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, int64(time.Minute), 3) }

func runChild(cfg childConfig) (childReport, error) {
	var rep childReport
	if err := pin(cfg.CPU); err != nil {
		return rep, fmt.Errorf("pinning to CPU %d: %w", cfg.CPU, err)
	}
	if isFanout(cfg.Transport) {
		return runFanoutChild(cfg)
	}
	if cfg.Transport == loopTransport {
		return runLoopChild(cfg)
	}
	wait, err := ring.ParseWait(cfg.Wait)
	if cfg.Wait == "" {
		wait, err = ring.Adaptive(0), nil
	}
	if err != nil {
		return rep, err
	}
	size := cfg.Size
	isRing := cfg.Transport == "spsc" || cfg.Transport == "mpmc"
	isFloor := cfg.Transport == "floor"
	stall := cfg.Duration + 30*time.Second // the floor's bound on a dead peer
	openSender := func(name string, f *os.File) (sender, error) {
		switch {
		case isRing:
			return openRingSender(cfg.Dir, name, wait)
		case isFloor:
			return newFloorRing(f, size, true, stall)
		}
		return newFDTransport(f, size), nil
	}
	openReceiver := func(name string, f *os.File) (receiver, error) {
		switch {
		case isRing:
			return openRingReceiver(cfg.Dir, name, wait)
		case isFloor:
			return newFloorRing(f, size, false, stall)
		}
		return newFDTransport(f, size), nil
	}
	fd3, fd4 := os.NewFile(3, "transport"), os.NewFile(4, "transport-2")
	if isFloor && cfg.Role == "pinger" {
		return runFloorPinger(cfg, fd3)
	}
	if isFloor && cfg.Role == "echoer" {
		return runFloorEchoer(cfg, fd3)
	}
	typed := isRing && cfg.Codec != "" && cfg.Codec != "raw"
	wrapSender := func(s sender) (msgSender, error) {
		if typed {
			m, _, err := newTypedMsg(cfg.Codec, size, s, nil)
			return m, err
		}
		return &rawMsg{s: s, size: size, pattern: pattern(size)}, nil
	}
	wrapReceiver := func(r receiver) (msgReceiver, error) {
		if typed {
			_, m, err := newTypedMsg(cfg.Codec, size, nil, r)
			return m, err
		}
		return &rawMsg{r: r, size: size}, nil
	}
	switch cfg.Role {
	case "writer":
		s, err := openSender(cfg.Ring, fd3)
		if err != nil {
			return rep, err
		}
		ms, err := wrapSender(s)
		if err != nil {
			return rep, err
		}
		return runWriter(cfg, ms)
	case "reader":
		r, err := openReceiver(cfg.Ring, fd3)
		if err != nil {
			return rep, err
		}
		mr, err := wrapReceiver(r)
		if err != nil {
			return rep, err
		}
		return runReader(cfg, mr)
	case "pinger", "echoer":
		var s sender
		var r receiver
		out, in := cfg.Ring, cfg.Ring2
		outFD, inFD := fd3, fd4
		if cfg.Role == "echoer" {
			out, in, outFD, inFD = cfg.Ring2, cfg.Ring, fd4, fd3
		}
		if cfg.Transport == "unix" || cfg.Transport == "tcp" {
			t := newFDTransport(fd3, size) // one bidirectional socket
			s, r = t, t
		} else {
			if r, err = openReceiver(in, inFD); err != nil {
				return rep, err
			}
			if s, err = openSender(out, outFD); err != nil {
				return rep, err
			}
		}
		ms, err := wrapSender(s)
		if err != nil {
			return rep, err
		}
		mr, err := wrapReceiver(r)
		if err != nil {
			return rep, err
		}
		if cfg.Role == "pinger" {
			return runPinger(cfg, ms, mr)
		}
		return runEchoer(ms, mr)
	}
	return rep, fmt.Errorf("unknown role %q", cfg.Role)
}

// runWriter sends for cfg.Duration: as fast as it can (throughput), at cfg.Rate per second
// (latency), or nothing at all (idle), then closes the transport.
func runWriter(cfg childConfig, s msgSender) (childReport, error) {
	var rep childReport
	ctx := context.Background()
	cpu0 := cpuSeconds()
	start := monotonicNow()
	end := start + cfg.Duration.Nanoseconds()
	var seq uint64
	switch cfg.Scenario {
	case "throughput":
		if batch := cfg.Batch; batch > 1 {
			every := max(64/batch, 1) // read the clock about every 64 messages
			for i := 0; ; i++ {
				if i%every == 0 && monotonicNow() >= end {
					break
				}
				if err := s.sendBatch(ctx, seq, batch, cfg.WriterID); err != nil {
					return rep, err
				}
				seq += uint64(batch)
			}
			break
		}
		for ; ; seq++ {
			if seq%64 == 0 && monotonicNow() >= end {
				break
			}
			if err := s.sendMsg(ctx, seq, cfg.WriterID, 0); err != nil {
				return rep, err
			}
		}
	case "latency":
		interval := int64(time.Second) / int64(max(cfg.Rate, 1))
		for next := start; next < end; seq++ {
			waitUntil(next)
			if err := s.sendMsg(ctx, seq, cfg.WriterID, monotonicNow()); err != nil {
				return rep, err
			}
			next += interval
		}
	case "idle":
		time.Sleep(cfg.Duration)
	}
	rep.Sent = seq
	rep.CPU = cpuSeconds() - cpu0
	return rep, s.close()
}

// pattern is the constant payload of every message of size bytes.
func pattern(size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(i)
	}
	return p
}

// waitUntil sleeps until shortly before t, then spins to it: the OS sleeps too coarsely for
// 100 µs gaps.
func waitUntil(t int64) {
	if d := t - monotonicNow() - 60_000; d > 0 {
		time.Sleep(time.Duration(d))
	}
	for monotonicNow() < t {
	}
}

// runReader receives until the stream ends, verifying every message, and records one-way
// latency for the latency scenario.
func runReader(cfg childConfig, r msgReceiver) (childReport, error) {
	rep := childReport{PerWriter: map[uint32]uint64{}}
	hist := newHistogram()
	const maxWriters = 1024
	next := make([]uint64, maxWriters) // per writer: the lowest sequence number not yet seen
	perWriter := make([]uint64, maxWriters)
	latency := cfg.Scenario == "latency"
	ctx := context.Background()
	cpu0 := cpuSeconds()
	var first int64
	fn := func(seq uint64, writer uint32, sent int64, ok bool) {
		if !ok || writer >= maxWriters {
			rep.Corrupt++
			return
		}
		if seq < next[writer] { // a duplicate, or out of order
			rep.Corrupt++
			return
		}
		next[writer] = seq + 1
		rep.Received++
		perWriter[writer]++
		if first == 0 {
			first = monotonicNow()
		}
		if latency {
			_ = hist.RecordValue(max(monotonicNow()-sent, 1))
		}
	}
	batch := 1
	if cfg.Scenario == "throughput" {
		batch = cfg.Batch
	}
	for {
		var err error
		if batch > 1 {
			err = r.recvBatch(ctx, batch, fn)
		} else {
			err = r.recvMsg(ctx, fn)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rep, err
		}
	}
	// The end of the stream arrives right after the last message: it closes the interval.
	last := monotonicNow()
	rep.CPU = cpuSeconds() - cpu0
	if first != 0 {
		rep.Seconds = time.Duration(last - first).Seconds()
	}
	for w, n := range perWriter {
		if n > 0 {
			rep.PerWriter[uint32(w)] = n
		}
	}
	if cfg.Scenario == "latency" {
		rep.Latency = hist.Export()
	}
	return rep, r.close()
}

// runPinger sends a message, waits for it to come back, and records half the round trip,
// for cfg.Duration.
func runPinger(cfg childConfig, s msgSender, r msgReceiver) (childReport, error) {
	var rep childReport
	hist := newHistogram()
	ctx := context.Background()
	cpu0 := cpuSeconds()
	start := monotonicNow()
	end := start + cfg.Duration.Nanoseconds()
	var seq uint64
	check := func(got uint64, _ uint32, sent int64, ok bool) {
		if !ok || got != seq {
			rep.Corrupt++
			return
		}
		rep.Received++
		_ = hist.RecordValue(max((monotonicNow()-sent)/2, 1))
	}
	for ; monotonicNow() < end; seq++ {
		if err := s.sendMsg(ctx, seq, 0, monotonicNow()); err != nil {
			return rep, err
		}
		if err := r.recvMsg(ctx, check); err != nil {
			return rep, err
		}
	}
	rep.Sent = seq
	rep.Seconds = time.Duration(monotonicNow() - start).Seconds()
	rep.CPU = cpuSeconds() - cpu0
	rep.Latency = hist.Export()
	return rep, s.close()
}

// runEchoer sends every message straight back until the stream ends.
func runEchoer(s msgSender, r msgReceiver) (childReport, error) {
	var rep childReport
	ctx := context.Background()
	cpu0 := cpuSeconds()
	for {
		var sendErr error
		err := r.recvMsg(ctx, func(seq uint64, writer uint32, sent int64, ok bool) {
			rep.Received++
			sendErr = s.sendMsg(ctx, seq, writer, sent)
		})
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rep, err
		}
		if sendErr != nil {
			return rep, sendErr
		}
	}
	rep.CPU = cpuSeconds() - cpu0
	return rep, s.close()
}
