//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// One publisher, many subscribers, each in a process of its own:
//
//   - pubsub: a topic (ring.Topic). The publisher writes each message once, in place; every
//     subscriber reads it in place at its own position. --policy block (publishers wait for
//     the slowest subscriber) or overwrite (they never wait; a lapped subscriber counts what
//     it missed).
//   - fanout-spsc: the naive fan-out to compare with: one SPSC ring per subscriber, the
//     publisher writing each message into every ring in turn (encoded once in place in the
//     first ring, copied into the others).
//
// Both move the raw message format of message.go (--codec applies to spsc and mpmc only)
// and run the throughput, latency and idle scenarios (--consumers subscribers in each);
// a topic has no end of stream, so the publisher ends the benchmark's with a record of type
// topicEndType.
var fanoutTransports = []string{"pubsub", "fanout-spsc"}

func isFanout(transport string) bool { return slices.Contains(fanoutTransports, transport) }

// fanoutConfig is the part of a child's configuration that only pubsub and fanout-spsc use.
type fanoutConfig struct {
	Rings  []string // pubsub: the topic; fanout-spsc: one SPSC ring per subscriber
	Index  int      // reader: which subscriber this is
	Policy string   // pubsub: block or overwrite
}

// topicEndType is the type of the record that ends a pubsub stream; messages have type 0.
const topicEndType = 0xE0F

func parseBenchPolicy(s string) (string, error) {
	if s != "block" && s != "overwrite" {
		return "", fmt.Errorf("%w: --policy: want block or overwrite, not %q", errUsage, s)
	}
	return s, nil
}

// --- the parent ---

// newTopic makes the pubsub topic for messages of size bytes: slots as the mpmc ring's, and
// as many bytes as one SPSC ring of fanout-spsc.
func (b *bench) newTopic(size int) (string, error) {
	policy, err := ring.ParsePolicy(b.cfg.Policy)
	if err != nil {
		return "", err
	}
	b.n++
	name := fmt.Sprintf("pubsub-%d", b.n)
	slot := shm.NextPow2(uint64(size + 16))
	spec := ring.Spec{Kind: ring.Topic, Size: max(spinRingBytes(size), slot*64), SlotSize: uint32(slot), Policy: policy}
	seg, err := ring.Create(name, spec, shm.Options{Dir: b.dir})
	if err != nil {
		return "", err
	}
	return name, seg.Close()
}

// runFanout runs one pubsub or fanout-spsc case: the subscribers first, then, once every one
// of them has attached (so that none misses the start), the publisher.
func (b *bench) runFanout(cs caseSpec, base childConfig, res Result, timeout time.Duration) (Result, error) {
	base.Codec, res.Codec = "raw", "raw"
	fc := fanoutConfig{Policy: b.cfg.Policy}
	if cs.Transport == "pubsub" {
		name, err := b.newTopic(cs.Size)
		if err != nil {
			return res, err
		}
		fc.Rings = []string{name}
	} else {
		fc.Policy = ""
		for range cs.Consumers {
			name, err := b.newSegment("spsc", cs.Size)
			if err != nil {
				return res, err
			}
			fc.Rings = append(fc.Rings, name)
		}
	}
	var readers []*child
	var writer *child
	killAll := func() {
		for _, c := range append(readers, writer) {
			if c != nil {
				_ = c.cmd.Process.Kill()
			}
		}
	}
	for i := range cs.Consumers {
		cfg := base
		rc := fc
		rc.Index = i
		cfg.Role, cfg.CPU, cfg.Fanout = "reader", b.cpuFor(2*i+1), &rc
		c, err := b.start(cfg)
		if err != nil {
			killAll()
			return res, err
		}
		readers = append(readers, c)
	}
	if err := b.awaitSubscribers(fc.Rings, cs.Consumers, 30*time.Second); err != nil {
		killAll()
		for _, c := range readers {
			_, _ = b.wait(c, timeout)
		}
		return res, err
	}
	cfg := base
	cfg.Role, cfg.CPU, cfg.Fanout = "writer", b.cpuFor(0), &fc
	writer, err := b.start(cfg)
	if err != nil {
		killAll()
		return res, err
	}
	wrep, werr := b.wait(writer, timeout)
	if werr != nil {
		killAll() // a topic's subscribers would wait for ever
	}
	fr := &FanoutResult{Policy: fc.Policy, Published: wrep.Sent}
	res.CPUSeconds.Writer = wrep.CPU
	if wrep.Sent > 0 {
		fr.PublisherCPUNsPerMsg = wrep.CPU * 1e9 / float64(wrep.Sent)
	}
	hist := newHistogram()
	firstErr := werr
	if werr != nil {
		firstErr = fmt.Errorf("publisher: %w", werr)
	}
	for i, c := range readers {
		rep, err := b.wait(c, timeout)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("subscriber %d: %w", i, err)
		}
		sub := SubscriberResult{Messages: rep.Received, Missed: rep.Missed, Seconds: rep.Seconds, CPUSeconds: rep.CPU}
		if rep.Seconds > 0 && cs.Scenario != "idle" {
			sub.MsgsPerSec = float64(rep.Received) / rep.Seconds
		}
		if rep.Latency != nil {
			h := hdrhistogram.Import(rep.Latency)
			sub.Latency = latencyOf(h)
			hist.Merge(h)
		}
		fr.Subscribers = append(fr.Subscribers, sub)
		fr.Missed += rep.Missed
		res.Messages += rep.Received
		res.Corrupt += rep.Corrupt
		res.CPUSeconds.Reader += rep.CPU
		res.Seconds = max(res.Seconds, rep.Seconds)
		if got := rep.Received + rep.Missed; wrep.Sent > got {
			res.Lost += wrep.Sent - got
		}
	}
	if firstErr != nil {
		return res, firstErr
	}
	res.Fanout = fr
	res.conclude(cs.Scenario, b.cfg.Duration, hist)
	return res, nil
}

// awaitSubscribers waits until n subscribers are attached: n subscriptions held in the
// topic (pubsub), a reader on every ring (fanout-spsc).
func (b *bench) awaitSubscribers(rings []string, n int, timeout time.Duration) error {
	var segs []*shm.Segment
	defer func() {
		for _, s := range segs {
			s.Close()
		}
	}()
	for _, name := range rings {
		s, err := shm.Inspect(name, shm.Options{Dir: b.dir})
		if err != nil {
			return err
		}
		segs = append(segs, s)
	}
	attached := func() (int, error) {
		if len(segs) == 1 && segs[0].Descriptor().Kind == ring.Topic {
			st, err := ring.ReadTopicStats(segs[0])
			held := 0
			for _, s := range st.Subscriptions {
				if s.Held {
					held++
				}
			}
			return held, err
		}
		got := 0
		for _, s := range segs {
			st, err := ring.ReadStats(s)
			if err != nil {
				return got, err
			}
			got += st.ReadersOpen
		}
		return got, nil
	}
	deadline := time.Now().Add(timeout)
	for {
		got, err := attached()
		if err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d subscribers attached after %v", got, n, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// --- the children ---

func runFanoutChild(cfg childConfig) (childReport, error) {
	var rep childReport
	if cfg.Fanout == nil || len(cfg.Fanout.Rings) == 0 {
		return rep, errors.New("no rings to fan out to")
	}
	wait, err := ring.ParseWait(cfg.Wait)
	if err != nil {
		return rep, err
	}
	opts := ring.Options{Wait: wait}
	open := func(name string) (*shm.Segment, error) { return openChildSegment(cfg.Dir, name) }
	pubsub := cfg.Transport == "pubsub"
	switch cfg.Role {
	case "writer":
		f := &fanoutWriter{topic: pubsub, size: cfg.Size, pattern: pattern(cfg.Size)}
		for _, name := range cfg.Fanout.Rings {
			seg, err := open(name)
			if err != nil {
				return rep, err
			}
			var w ring.Writer
			if pubsub {
				w, err = ring.NewPublisher(seg, opts)
			} else {
				w, err = ring.NewSPSCWriter(seg, opts)
			}
			if err != nil {
				return rep, err
			}
			f.ws = append(f.ws, w)
		}
		return runWriter(cfg, f)
	case "reader":
		var r ring.Reader
		if pubsub {
			seg, err := open(cfg.Fanout.Rings[0])
			if err != nil {
				return rep, err
			}
			if r, err = ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{Start: ring.FromOldest, Wait: wait}); err != nil {
				return rep, err
			}
		} else {
			seg, err := open(cfg.Fanout.Rings[cfg.Fanout.Index])
			if err != nil {
				return rep, err
			}
			if r, err = ring.NewSPSCReader(seg, opts); err != nil {
				return rep, err
			}
		}
		fr := newFanoutReceiver(r, cfg.Batch)
		rep, err := runReader(cfg, fr)
		rep.Missed = fr.missed
		return rep, err
	}
	return rep, fmt.Errorf("unknown role %q", cfg.Role)
}

// fanoutWriter is the publisher of pubsub (ws is the topic's publisher) and of fanout-spsc
// (ws has one SPSC writer per subscriber's ring), as a msgSender that encodes each message
// in place, once: in the first ring, copied from there into the others, the first
// committed last so that its records stay reserved, and valid, while they are copied. It
// passes no closure per message (no allocation).
type fanoutWriter struct {
	ws          []ring.Writer
	topic       bool // pubsub: close ends the benchmark's stream with a topicEndType record
	size        int
	pattern     []byte
	recs0, recs [][]byte // a batch's records in the first ring and in the ring copied to
}

func (f *fanoutWriter) sendMsg(ctx context.Context, seq uint64, writer uint32, sendNs int64) error {
	p, err := f.ws[0].Reserve(ctx, 0, f.size)
	if err != nil {
		return err
	}
	encode(p, seq, writer, sendNs, f.pattern)
	for _, w := range f.ws[1:] {
		if err := w.Write(ctx, 0, p); err != nil {
			return err
		}
	}
	return f.ws[0].Commit()
}

func (f *fanoutWriter) sendBatch(ctx context.Context, seq0 uint64, n int, writer uint32) error {
	for i := 0; i < n; {
		var err error
		// As many as fit in the first ring, at least one (see ringSender.sendN).
		if f.recs0, err = f.ws[0].ReserveBatch(ctx, 0, f.size, n-i, f.recs0[:0]); err != nil {
			return err
		}
		for j, p := range f.recs0 {
			encode(p, seq0+uint64(i+j), writer, 0, f.pattern)
		}
		k := len(f.recs0)
		for _, w := range f.ws[1:] {
			for done := 0; done < k; {
				if f.recs, err = w.ReserveBatch(ctx, 0, f.size, k-done, f.recs[:0]); err != nil {
					return err
				}
				for _, p := range f.recs {
					copy(p, f.recs0[done])
					done++
				}
			}
			if err := w.Commit(); err != nil {
				return err
			}
		}
		// Commit each chunk: a topic's batch holds at most all its slots but one, and the
		// next ReserveBatch needs room its own uncommitted records would hold.
		if err := f.ws[0].Commit(); err != nil {
			return err
		}
		i += k
	}
	return nil
}

// close ends the stream: every SPSC writer's Close ends its ring's; a topic has no end of
// stream, so the publisher first publishes the benchmark's end record.
func (f *fanoutWriter) close() error {
	var first error
	if f.topic {
		first = f.ws[0].Write(context.Background(), topicEndType, nil)
	}
	for _, w := range f.ws {
		if err := w.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// fanoutReceiver is a subscriber (pubsub) or an SPSC reader (fanout-spsc) as a msgReceiver,
// with no closure per message. It decodes each record in place, but hands a message on only
// once the reader has validated it (Drain counts those): under Overwrite a publisher may
// overwrite a record while it is read, and such a record counts as missed, not as received
// or corrupt.
type fanoutReceiver struct {
	r       ring.Reader
	staged  []stagedMsg
	drainFn func(ring.Record) error
	missed  uint64 // records the subscriber missed (LagError)
	ended   bool
}

type stagedMsg struct {
	seq    uint64
	sendNs int64
	writer uint32
	ok     bool
}

// errTopicEnd stops a Drain at the record that ends a pubsub stream.
var errTopicEnd = errors.New("end of the benchmark's stream")

func newFanoutReceiver(r ring.Reader, batch int) *fanoutReceiver {
	f := &fanoutReceiver{r: r, staged: make([]stagedMsg, 0, max(batch, 1))}
	f.drainFn = func(rec ring.Record) error {
		if rec.Type == topicEndType {
			return errTopicEnd
		}
		seq, writer, sent, err := decode(rec.Data)
		f.staged = append(f.staged, stagedMsg{seq: seq, sendNs: sent, writer: writer, ok: err == nil})
		return nil
	}
	return f
}

func (f *fanoutReceiver) recvMsg(ctx context.Context, fn func(uint64, uint32, int64, bool)) error {
	return f.recvBatch(ctx, 1, fn)
}

// recvBatch returns io.EOF at the end of the stream: an SPSC ring's, or a topic's end record.
func (f *fanoutReceiver) recvBatch(ctx context.Context, most int, fn func(uint64, uint32, int64, bool)) error {
	if f.ended {
		return io.EOF
	}
	f.staged = f.staged[:0]
	n, err := f.r.Drain(ctx, f.drainFn, most)
	for _, m := range f.staged[:n] {
		fn(m.seq, m.writer, m.sendNs, m.ok)
	}
	if err == nil {
		return nil
	}
	return f.endOrLag(err)
}

// endOrLag turns Drain's error into io.EOF at the end record and counts a lag as missed
// (nil). Apart from recvBatch, so that its *LagError does not escape on every call.
func (f *fanoutReceiver) endOrLag(err error) error {
	var lag *ring.LagError
	switch {
	case errors.Is(err, errTopicEnd):
		f.ended = true
		return io.EOF
	case errors.As(err, &lag):
		f.missed += lag.Missed
		return nil
	}
	return err
}

func (f *fanoutReceiver) close() error { return f.r.Close() }
