// Command broker connects processes by name through package broker, with both ends driven
// by event loops (package loop) and every message written in place in the ring:
//
//	go run ./examples/broker
//
// A receiver process binds the name "sensor-hub" and takes connections with an accept
// listener on its loop (Listener.AddTo); each connection's incoming ring joins the same
// loop. Two requestor processes, started before the receiver, dial the name: the dial
// waits until a server holds it, and its outcome reaches a connect listener on the
// requestor's loop. A requestor then streams frames of sensor samples: it reserves room in
// the ring, writes the samples and a CRC32-C straight into it, and commits a batch at a
// time (zero-copy: no buffer of its own). The receiver checks every frame in place and
// answers each with an acknowledgement written the same way; the requestor checks that the
// acknowledgements come back in order with its checksums, and keeps a window of frames in
// flight. The program prints each connection's events, then the frames, bytes, round-trip
// times and checksum results of both sides.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/shmq/shmq/broker"
	"github.com/shmq/shmq/examples/internal/proc"
	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
)

const (
	serverName = "sensor-hub"

	typeFrame = 10 // requestor → receiver
	typeAck   = 11 // receiver → requestor

	frameHeader = 24 // seq u64, samples bytes u32, crc32c u32, sent (CLOCK_MONOTONIC ns) i64
	ackSize     = 24 // seq u64, crc32c u32, ok u32, sent i64 (echoed)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// config is what the parent passes to every process.
type config struct {
	Requestors int
	Frames     int    // per requestor
	FrameBytes int    // samples per frame, bytes (a multiple of 8)
	Window     int    // frames in flight per connection
	Batch      int    // frames reserved per Commit
	RingSize   uint64 // each of a connection's two rings
}

func defaultConfig() config {
	return config{Requestors: 2, Frames: 4000, FrameBytes: 16 << 10, Window: 8, Batch: 4, RingSize: 256 << 10}
}

var roles = map[string]func(context.Context) error{
	"receiver":  receiver,
	"requestor": requestor,
}

func main() {
	if proc.Role() != "" {
		os.Exit(proc.RunChild(roles))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, defaultConfig())
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "broker:", err)
		os.Exit(1)
	}
}

func mono() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func options(cfg config) broker.Options {
	return broker.Options{Dir: proc.Dir(), RingSize: cfg.RingSize, Wait: ring.Futex()}
}

// receiverResult is what the receiver reports.
type receiverResult struct {
	Accepted, Ended int
	Ends            []string // how each connection ended
	Frames, Bytes   uint64
	BadFrames       uint64 // wrong length or checksum
	Acks            uint64
}

// receiver binds the name and serves every connection on one event loop until
// cfg.Requestors connections have ended (or SIGTERM).
func receiver(ctx context.Context) error {
	var cfg config
	if err := proc.Config(&cfg); err != nil {
		return err
	}
	l, err := broker.Listen(serverName, options(cfg))
	if err != nil {
		return err
	}
	defer l.Close()
	var (
		lp      *loop.Loop
		res     receiverResult
		failure error
	)
	fail := func(err error) {
		if failure == nil {
			failure = err
		}
		lp.Stop()
	}
	lp = loop.New(loop.Options{Wait: ring.Futex(), OnError: func(_ *loop.Source, err error) { fail(err) }})

	// onAccept runs on the loop's goroutine for each new connection: its incoming ring joins
	// the loop, and its handler answers on the outgoing ring, in place.
	onAccept := func(conn *broker.Conn) {
		res.Accepted++
		fmt.Fprintf(os.Stderr, "accepted %s (on the loop)\n", conn.Name())
		w := conn.Writer()
		handle := func(rec ring.Record) error {
			if rec.Type != typeFrame || len(rec.Data) < frameHeader {
				res.BadFrames++
				return nil
			}
			// rec.Data is the ring's memory: check the frame where it lies.
			seq := binary.LittleEndian.Uint64(rec.Data[0:])
			n := int(binary.LittleEndian.Uint32(rec.Data[8:]))
			sum := binary.LittleEndian.Uint32(rec.Data[12:])
			sent := binary.LittleEndian.Uint64(rec.Data[16:])
			ok := n == len(rec.Data)-frameHeader && crc32.Checksum(rec.Data[frameHeader:], castagnoli) == sum
			res.Frames++
			res.Bytes += uint64(len(rec.Data))
			if !ok {
				res.BadFrames++
			}
			// The acknowledgement, written in the reply ring: the requestor's window keeps
			// room for it, so this never waits.
			ack, err := w.TryReserve(typeAck, ackSize)
			if err != nil {
				return fmt.Errorf("reserving an ack: %w", err)
			}
			binary.LittleEndian.PutUint64(ack[0:], seq)
			binary.LittleEndian.PutUint32(ack[8:], sum)
			binary.LittleEndian.PutUint32(ack[12:], b2u(ok))
			binary.LittleEndian.PutUint64(ack[16:], sent)
			if err := w.Commit(); err != nil {
				return err
			}
			res.Acks++
			return nil
		}
		onEnd := func(err error) {
			res.Ended++
			res.Ends = append(res.Ends, fmt.Sprint(err))
			fmt.Fprintf(os.Stderr, "%s ended: %v\n", conn.Name(), err)
			conn.Close() // removes the connection's rings
			if !errors.Is(err, io.EOF) {
				fail(fmt.Errorf("%s: %w", conn.Name(), err))
			}
			if res.Ended == cfg.Requestors {
				lp.Stop()
			}
		}
		if _, err := lp.Add(conn.Reader(), handle, onEnd); err != nil {
			conn.Close()
			fail(err)
		}
	}
	if _, err := l.AddTo(lp, onAccept, func(err error) { fmt.Fprintf(os.Stderr, "listener ended: %v\n", err) }); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "listening on %q\n", serverName)
	if err := lp.Run(ctx); err != nil {
		return err
	}
	if failure != nil {
		return failure
	}
	return proc.Result(res)
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// dialTo dials name on a goroutine of its own and hands the outcome to onConnect on lp's
// goroutine: a connect listener on the loop. It stands in for broker.DialTo, which is not
// in this tree yet; the wait for a server is broker.Dial's.
func dialTo(ctx context.Context, lp *loop.Loop, name string, opts broker.Options, onConnect func(*broker.Conn, error)) {
	go func() {
		conn, err := broker.Dial(ctx, name, opts)
		if perr := lp.Post(func() { onConnect(conn, err) }); perr != nil && conn != nil {
			conn.Close() // the loop stopped meanwhile
		}
	}()
}

// requestorResult is what a requestor reports.
type requestorResult struct {
	Frames, Bytes, Acks, BadAcks uint64
	WaitedForServer              time.Duration
	Seconds                      float64
	RTTp50, RTTp99               int64
}

// requestor dials the receiver, streams cfg.Frames frames written in place, and checks the
// acknowledgements, everything on its event loop.
func requestor(ctx context.Context) error {
	var cfg config
	if err := proc.Config(&cfg); err != nil {
		return err
	}
	var (
		lp       *loop.Loop
		res      requestorResult
		failure  error
		conn     *broker.Conn
		w        ring.Writer
		sent     uint64 // frames committed
		acked    uint64
		sums     = make([]uint32, cfg.Window) // checksums of the frames in flight, by seq % Window
		rtt      = hdrhistogram.New(1, int64(time.Minute), 3)
		start    time.Time
		dialed          = time.Now()
		fill     uint64 = uint64(os.Getpid()) // the samples' pseudo-random state
		finished bool
	)
	fail := func(err error) {
		if failure == nil {
			failure = err
		}
		lp.Stop()
	}
	lp = loop.New(loop.Options{Wait: ring.Futex(), OnError: func(_ *loop.Source, err error) { fail(err) }})

	// sendMore fills the window: Batch frames reserved in the ring, written in place, then
	// one Commit.
	sendMore := func() error {
		for sent < uint64(cfg.Frames) && sent-acked < uint64(cfg.Window) {
			n := min(cfg.Batch, cfg.Frames-int(sent), cfg.Window-int(sent-acked))
			for i := range n {
				seq := sent + uint64(i)
				p, err := w.Reserve(ctx, typeFrame, frameHeader+cfg.FrameBytes)
				if err != nil {
					return err
				}
				samples := p[frameHeader:]
				for j := 0; j+8 <= len(samples); j += 8 {
					fill ^= fill << 13
					fill ^= fill >> 7
					fill ^= fill << 17
					binary.LittleEndian.PutUint64(samples[j:], fill)
				}
				sum := crc32.Checksum(samples, castagnoli)
				sums[seq%uint64(cfg.Window)] = sum
				binary.LittleEndian.PutUint64(p[0:], seq)
				binary.LittleEndian.PutUint32(p[8:], uint32(len(samples)))
				binary.LittleEndian.PutUint32(p[12:], sum)
				binary.LittleEndian.PutUint64(p[16:], uint64(mono()))
			}
			if err := w.Commit(); err != nil {
				return err
			}
			sent += uint64(n)
			res.Frames += uint64(n)
			res.Bytes += uint64(n * (frameHeader + cfg.FrameBytes))
		}
		return nil
	}

	onAck := func(rec ring.Record) error {
		if rec.Type != typeAck || len(rec.Data) < ackSize {
			res.BadAcks++
			return nil
		}
		seq := binary.LittleEndian.Uint64(rec.Data[0:])
		sum := binary.LittleEndian.Uint32(rec.Data[8:])
		ok := binary.LittleEndian.Uint32(rec.Data[12:]) == 1
		sentAt := int64(binary.LittleEndian.Uint64(rec.Data[16:]))
		if seq != acked || sum != sums[seq%uint64(cfg.Window)] || !ok {
			res.BadAcks++
		}
		_ = rtt.RecordValue(max(mono()-sentAt, 1))
		acked++
		res.Acks++
		if acked == uint64(cfg.Frames) {
			res.Seconds = time.Since(start).Seconds()
			finished = true
			conn.Close() // the receiver reads everything, then io.EOF
			lp.Stop()
			return nil
		}
		return sendMore()
	}

	onConnect := func(c *broker.Conn, err error) {
		if err != nil {
			fail(fmt.Errorf("dial %s: %w", serverName, err))
			return
		}
		conn, w = c, c.Writer()
		res.WaitedForServer = time.Since(dialed)
		fmt.Fprintf(os.Stderr, "connected as %s after %v (on the loop)\n", c.Name(), res.WaitedForServer.Round(time.Millisecond))
		if _, err := lp.Add(c.Reader(), onAck, func(err error) {
			if !finished {
				fail(fmt.Errorf("connection ended early: %w", err))
			}
		}); err != nil {
			fail(err)
			return
		}
		start = time.Now()
		if err := sendMore(); err != nil {
			fail(err)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	dialTo(dctx, lp, serverName, options(cfg), onConnect)
	fmt.Fprintf(os.Stderr, "dialling %q\n", serverName)
	err := lp.Run(ctx)
	if conn != nil {
		conn.Close()
	}
	if err != nil {
		return err
	}
	if failure != nil {
		return failure
	}
	res.RTTp50, res.RTTp99 = rtt.ValueAtQuantile(50), rtt.ValueAtQuantile(99)
	return proc.Result(res)
}

// run is the parent: requestors first (they wait for the name), then the receiver.
func run(ctx context.Context, out io.Writer, cfg config) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second) // never hang
	defer cancel()
	g, err := proc.NewGroup("broker", out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := g.Close(); err == nil {
			err = cerr
		}
	}()
	fmt.Fprintf(out, "segments: %s (removed at the end)\n", g.Dir)
	fmt.Fprintf(out, "broker: %d requestor processes dial %q before its receiver process listens; each sends %d frames of %d KiB, written in place, %d per commit, %d in flight\n",
		cfg.Requestors, serverName, cfg.Frames, cfg.FrameBytes>>10, cfg.Batch, cfg.Window)

	var reqs []*proc.Proc
	for range cfg.Requestors {
		p, err := g.Start("requestor", cfg)
		if err != nil {
			return err
		}
		reqs = append(reqs, p)
	}
	select {
	case <-time.After(300 * time.Millisecond): // let them wait for the name a little
	case <-ctx.Done():
		return ctx.Err()
	}
	recv, err := g.Start("receiver", cfg)
	if err != nil {
		return err
	}
	results := make([]requestorResult, len(reqs))
	for i, p := range reqs {
		if err := p.Result(ctx, &results[i]); err != nil {
			return err
		}
	}
	var rr receiverResult
	if err := recv.Result(ctx, &rr); err != nil {
		return err
	}
	for _, p := range append(reqs, recv) {
		if err := p.Wait(ctx); err != nil {
			return fmt.Errorf("%s: %v", p.Role, err)
		}
	}

	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requestor\twaited for server\tframes\tMB\tacks\tbad acks\tround trip p50\tp99\tMB/s\t")
	var frames, acks, bad uint64
	for i, r := range results {
		fmt.Fprintf(tw, "%d\t%v\t%d\t%.1f\t%d\t%d\t%s\t%s\t%.0f\t\n", i+1, r.WaitedForServer.Round(time.Millisecond), r.Frames,
			float64(r.Bytes)/1e6, r.Acks, r.BadAcks, dur(r.RTTp50), dur(r.RTTp99), float64(r.Bytes)/1e6/r.Seconds)
		frames += r.Frames
		acks += r.Acks
		bad += r.BadAcks
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nreceiver: %d connections accepted, %d ended %v; %d frames (%.1f MB) checked in place, %d bad; %d acks sent\n",
		rr.Accepted, rr.Ended, rr.Ends, rr.Frames, float64(rr.Bytes)/1e6, rr.BadFrames, rr.Acks)
	want := uint64(cfg.Requestors * cfg.Frames)
	if rr.Accepted != cfg.Requestors || frames != want || rr.Frames != want || rr.BadFrames != 0 || rr.Acks != want || acks != want || bad != 0 {
		return fmt.Errorf("frames not accounted for: %d sent, %d received (%d bad), %d acks sent, %d received (%d bad)",
			frames, rr.Frames, rr.BadFrames, rr.Acks, acks, bad)
	}
	fmt.Fprintf(out, "every frame accounted for: %d sent, %d received intact, %d acknowledged in order\n", want, want, want)
	return nil
}

func dur(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(ns)/1e3)
	default:
		return fmt.Sprintf("%.3gms", float64(ns)/1e6)
	}
}
