//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// loop: one event loop (package loop) in the reader process serves 1, 10 and 100 SPSC rings
// (a case each; the Result's producers is the number of rings); one writer process writes
// them all, message by message in turn (batch by batch with --batch), and closes them. The
// reader's --waits is the loop's wait strategy (the writer's too). The throughput, latency
// and idle scenarios; idle is the CPU of the reader process while its loop sleeps on every
// ring. Messages carry their ring's index as the writer id, so order and loss are checked
// per ring.
const loopTransport = "loop"

// loopRings are the ring counts of the loop cases.
var loopRings = []int{1, 10, 100}

// loopCases are the cases of the loop transport for one scenario.
func (c config) loopCases(scenario string) []caseSpec {
	if scenario == "pingpong" {
		return nil
	}
	var out []caseSpec
	for _, w := range c.Waits {
		for _, size := range c.Sizes {
			for _, n := range loopRings {
				cs := caseSpec{Scenario: scenario, Transport: loopTransport, Wait: w, Size: size, Producers: n, Consumers: 1, Batch: 1}
				if scenario == "throughput" {
					cs.Batch = c.Batch
				}
				out = append(out, cs)
			}
		}
	}
	return out
}

// loopRingBytes sizes each ring of a loop case: room for 64 messages (and at least 64 KiB),
// so that 100 rings stay small in /dev/shm.
func loopRingBytes(size int) uint64 { return max(64<<10, shm.NextPow2(uint64(64*(size+16)))) }

// runLoop runs one loop case: the reader (the loop) first, then, once it has attached to
// every ring, the writer. The rings are removed after the case.
func (b *bench) runLoop(cs caseSpec, base childConfig, res Result, timeout time.Duration) (Result, error) {
	base.Codec, res.Codec = "raw", "raw"
	fc := fanoutConfig{}
	defer func() {
		for _, name := range fc.Rings {
			_ = shm.Remove(name, shm.Options{Dir: b.dir})
		}
	}()
	for range cs.Producers {
		b.n++
		name := fmt.Sprintf("loop-%d", b.n)
		seg, err := ring.Create(name, ring.Spec{Kind: ring.SPSC, Size: loopRingBytes(cs.Size)}, shm.Options{Dir: b.dir})
		if err != nil {
			return res, err
		}
		fc.Rings = append(fc.Rings, name)
		if err := seg.Close(); err != nil {
			return res, err
		}
	}
	cfg := base
	cfg.Role, cfg.CPU, cfg.Fanout = "reader", b.cpuFor(1), &fc
	reader, err := b.start(cfg)
	if err != nil {
		return res, err
	}
	if err := b.awaitSubscribers(fc.Rings, len(fc.Rings), 30*time.Second); err != nil {
		_ = reader.cmd.Process.Kill()
		_, _ = b.wait(reader, timeout)
		return res, err
	}
	cfg.Role, cfg.CPU = "writer", b.cpuFor(0)
	writer, err := b.start(cfg)
	if err != nil {
		_ = reader.cmd.Process.Kill()
		_, _ = b.wait(reader, timeout)
		return res, err
	}
	wrep, werr := b.wait(writer, timeout)
	if werr != nil {
		_ = reader.cmd.Process.Kill() // the streams would never end
	}
	rrep, rerr := b.wait(reader, timeout)
	switch {
	case werr != nil:
		return res, fmt.Errorf("writer: %w", werr)
	case rerr != nil:
		return res, fmt.Errorf("reader: %w", rerr)
	}
	res.Messages, res.Corrupt, res.Seconds = rrep.Received, rrep.Corrupt, rrep.Seconds
	res.CPUSeconds.Writer, res.CPUSeconds.Reader = wrep.CPU, rrep.CPU
	if wrep.Sent > rrep.Received {
		res.Lost = wrep.Sent - rrep.Received
	}
	switch cs.Scenario {
	case "idle":
		res.Seconds = b.cfg.Duration.Seconds()
		res.IdleCPUPercent = 100 * res.CPUSeconds.Reader / res.Seconds
	case "latency":
		if rrep.Latency != nil {
			res.Latency = latencyOf(hdrhistogram.Import(rrep.Latency))
		}
	}
	res.finish()
	return res, nil
}

// --- the children ---

func runLoopChild(cfg childConfig) (childReport, error) {
	var rep childReport
	if cfg.Fanout == nil || len(cfg.Fanout.Rings) == 0 {
		return rep, errors.New("no rings for the loop")
	}
	wait, err := ring.ParseWait(cfg.Wait)
	if err != nil {
		return rep, err
	}
	var segs []*shm.Segment
	for _, name := range cfg.Fanout.Rings {
		seg, err := openChildSegment(cfg.Dir, name)
		if err != nil {
			return rep, err
		}
		segs = append(segs, seg)
	}
	switch cfg.Role {
	case "writer":
		w := &loopWriter{size: cfg.Size, pattern: pattern(cfg.Size)}
		for _, seg := range segs {
			sw, err := ring.NewSPSCWriter(seg, ring.Options{Wait: wait})
			if err != nil {
				return rep, err
			}
			w.ws = append(w.ws, sw)
		}
		return runWriter(cfg, w)
	case "reader":
		return runLoopReader(cfg, wait, segs)
	}
	return rep, fmt.Errorf("unknown role %q", cfg.Role)
}

// loopWriter writes message seq to ring seq mod the number of rings (a batch to one ring),
// with the ring's index as the writer id.
type loopWriter struct {
	ws      []ring.Writer
	size    int
	pattern []byte
	recs    [][]byte
}

func (w *loopWriter) sendMsg(ctx context.Context, seq uint64, _ uint32, sendNs int64) error {
	i := seq % uint64(len(w.ws))
	p, err := w.ws[i].Reserve(ctx, 0, w.size)
	if err != nil {
		return err
	}
	encode(p, seq, uint32(i), sendNs, w.pattern)
	return w.ws[i].Commit()
}

func (w *loopWriter) sendBatch(ctx context.Context, seq0 uint64, n int, _ uint32) error {
	i := (seq0 / uint64(n)) % uint64(len(w.ws))
	for j := 0; j < n; {
		var err error
		if w.recs, err = w.ws[i].ReserveBatch(ctx, 0, w.size, n-j, w.recs[:0]); err != nil {
			return err
		}
		for _, p := range w.recs {
			encode(p, seq0+uint64(j), uint32(i), 0, w.pattern)
			j++
		}
	}
	return w.ws[i].Commit()
}

// close ends every ring's stream.
func (w *loopWriter) close() error {
	var first error
	for _, sw := range w.ws {
		if err := sw.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// runLoopReader serves every ring with one loop until every stream has ended, verifying
// each message (checksum, ring, order) and recording one-way latency in the latency
// scenario. No allocation per message: a handler per ring, made up front.
func runLoopReader(cfg childConfig, wait ring.Wait, segs []*shm.Segment) (childReport, error) {
	rep := childReport{PerWriter: map[uint32]uint64{}}
	hist := newHistogram()
	latency := cfg.Scenario == "latency"
	l := loop.New(loop.Options{Wait: wait})
	next := make([]uint64, len(segs))
	perRing := make([]uint64, len(segs))
	var first, last int64
	var endErr error
	ended := 0
	var readers []ring.Reader
	defer func() {
		for _, r := range readers {
			_ = r.Close()
		}
	}()
	for i, seg := range segs {
		r, err := ring.NewSPSCReader(seg, ring.Options{Wait: wait})
		if err != nil {
			return rep, err
		}
		readers = append(readers, r)
		handler := func(rec ring.Record) error {
			seq, writer, sent, err := decode(rec.Data)
			if err != nil || writer != uint32(i) || seq < next[i] {
				rep.Corrupt++
				return nil
			}
			next[i] = seq + 1
			rep.Received++
			perRing[i]++
			if first == 0 {
				first = monotonicNow()
			}
			if latency {
				_ = hist.RecordValue(max(monotonicNow()-sent, 1))
			}
			return nil
		}
		onEnd := func(err error) {
			if !errors.Is(err, io.EOF) && endErr == nil {
				endErr = fmt.Errorf("ring %d: %w", i, err)
			}
			if ended++; ended == len(segs) {
				last = monotonicNow()
				l.Stop()
			}
		}
		if _, err := l.Add(r, handler, onEnd); err != nil {
			return rep, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+time.Minute)
	defer cancel()
	cpu0 := cpuSeconds()
	if err := l.Run(ctx); err != nil {
		return rep, err
	}
	rep.CPU = cpuSeconds() - cpu0
	if first != 0 {
		rep.Seconds = time.Duration(last - first).Seconds()
	}
	for i, n := range perRing {
		if n > 0 {
			rep.PerWriter[uint32(i)] = n
		}
	}
	if latency {
		rep.Latency = hist.Export()
	}
	return rep, endErr
}
