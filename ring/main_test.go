package ring_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func TestMain(m *testing.M) {
	proctest.Register("spsc-writer", runSPSCWriter)
	proctest.Register("spsc-reader", runSPSCReader)
	proctest.Register("pinger", runPinger)
	proctest.Register("ponger", runPonger)
	proctest.Register("mpmc-writer", runMPMCWriter)
	proctest.Register("mpmc-reader", runMPMCReader)
	proctest.Register("bench-drain", runBenchDrain)
	proctest.Register("bench-echo", runBenchEcho)
	proctest.Register("idle-reader", runIdleReader)
	proctest.Register("idle-writer", runIdleWriter)
	proctest.Register("mpmc-attached-reader", runMPMCAttachedReader)
	proctest.Register("topic-pub", runTopicPub)
	proctest.Register("topic-sub", runTopicSub)
	proctest.Register("topic-latest-pub", runTopicLatestPub)
	proctest.Register("topic-loader", runTopicLoader)
	proctest.Main(m)
}

// procConfig tells a child what to do; it travels as JSON in the first argument.
type procConfig struct {
	Dir, Name      string
	Count          uint64 // messages to write; the reader reads until the stream ends
	MinLen, MaxLen int
	Wait           string
	Batch          int    // writer: records per commit
	KillAt         uint64 // writer: report the phase points at this sequence number
	Close          bool   // writer: Close at the end (else exit without closing)
	PongName       string // pinger/ponger: the reply ring
	WriterID       uint64 // mpmc-writer: goes into the top bits of every sequence number
	Unordered      bool   // mpmc-reader: do not check per-writer order
	StopAfter      uint64 // spsc-reader: read this many, then close cleanly (0: until the end)
	From           uint64 // spsc-reader: the first sequence number expected
	AwaitWriters   int    // mpmc-writer: write only once this many writers attached (or one began)
	UseBatch       bool   // writers: ReserveBatch of Batch records of one length, type batchType
}

func (c procConfig) args() []string {
	b, _ := json.Marshal(c)
	return []string{string(b)}
}

func parseConfig(c *proctest.Child) (procConfig, ring.Options, *shm.Segment, error) {
	var cfg procConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return cfg, ring.Options{}, nil, err
	}
	wait, err := ring.ParseWait(cfg.Wait)
	if err != nil {
		return cfg, ring.Options{}, nil, err
	}
	seg, err := shm.Open(cfg.Name, shm.Options{Dir: cfg.Dir})
	return cfg, ring.Options{Wait: wait}, seg, err
}

// readerReport is what a reader child sends back.
type readerReport struct {
	Next uint64 // the next sequence number it expected: all before it arrived, in order, intact
	Err  string // how the stream ended: "ended", "peer-dead", or a failure
}

func runSPSCWriter(c *proctest.Child) error {
	cfg, opts, seg, err := parseConfig(c)
	if err != nil {
		return err
	}
	w, err := ring.NewSPSCWriter(seg, opts)
	if err != nil {
		return err
	}
	if err := writeSequence(c, cfg, w, func(n uint64) uint64 { return n }); err != nil {
		return err
	}
	if cfg.Close {
		return w.Close()
	}
	return nil
}

// seqWriter is what writeSequence needs of a ring writer.
type seqWriter interface {
	Reserve(ctx context.Context, typ uint32, n int) ([]byte, error)
	ReserveBatch(ctx context.Context, typ uint32, n, count int, dst [][]byte) ([][]byte, error)
	Commit() error
}

// writeSequence writes cfg.Count checked messages, committing every cfg.Batch, and reports
// the points before-reserve, after-reserve and after-commit at message cfg.KillAt (where
// the parent may have told the child to die). seq maps the counter to the message number.
func writeSequence(c *proctest.Child, cfg procConfig, w seqWriter, seq func(n uint64) uint64) error {
	ctx := context.Background()
	batch := uint64(max(cfg.Batch, 1))
	if cfg.UseBatch {
		var recs [][]byte
		for n := uint64(0); n < cfg.Count; {
			var err error
			recs, err = w.ReserveBatch(ctx, batchType, msgLen(n, cfg.MinLen, cfg.MaxLen), int(min(batch, cfg.Count-n)), recs[:0])
			if err != nil {
				return fmt.Errorf("reserve batch at %d: %w", n, err)
			}
			for _, p := range recs {
				fillMsg(p, seq(n))
				n++
			}
			if err := w.Commit(); err != nil {
				return err
			}
		}
		return nil
	}
	for n := uint64(0); n < cfg.Count; n++ {
		kill := n == cfg.KillAt
		if kill {
			c.Point("before-reserve")
		}
		p, err := w.Reserve(ctx, uint32(seq(n)), msgLen(n, cfg.MinLen, cfg.MaxLen))
		if err != nil {
			return fmt.Errorf("reserve %d: %w", n, err)
		}
		fillMsg(p, seq(n))
		if kill {
			c.Point("after-reserve")
		}
		if (n+1)%batch == 0 || n+1 == cfg.Count {
			if err := w.Commit(); err != nil {
				return err
			}
		}
		if kill {
			c.Point("after-commit")
		}
	}
	return nil
}

func runSPSCReader(c *proctest.Child) error {
	cfg, opts, seg, err := parseConfig(c)
	if err != nil {
		return err
	}
	r, err := ring.NewSPSCReader(seg, opts)
	if err != nil {
		return err
	}
	c.Point("ready")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep := readerReport{Next: cfg.From}
	for {
		if cfg.StopAfter != 0 && rep.Next-cfg.From == cfg.StopAfter {
			rep.Err = "stopped"
			if err := r.Close(); err != nil {
				return err
			}
			if err := seg.Close(); err != nil {
				return err
			}
			return c.Result(rep)
		}
		rec, err := r.Next(ctx)
		switch {
		case errors.Is(err, ring.ErrEndOfStream):
			rep.Err = "ended"
		case errors.Is(err, ring.ErrPeerDead):
			rep.Err = "peer-dead"
		case err != nil:
			rep.Err = err.Error()
		}
		if err != nil {
			return c.Result(rep)
		}
		seq, err := checkMsg(rec.Data, rec.Type)
		if err == nil && seq != rep.Next {
			err = fmt.Errorf("got message %d, expected %d", seq, rep.Next)
		}
		if err != nil {
			rep.Err = err.Error()
			return c.Result(rep)
		}
		rep.Next++
		r.Release()
	}
}

// runPinger sends Count messages on Name, waiting for each to come back on PongName before
// sending the next, so that every message makes the other side sleep and be woken.
func runPinger(c *proctest.Child) error {
	cfg, opts, seg, err := parseConfig(c)
	if err != nil {
		return err
	}
	pong, err := shm.Open(cfg.PongName, shm.Options{Dir: cfg.Dir})
	if err != nil {
		return err
	}
	w, err := ring.NewSPSCWriter(seg, opts)
	if err != nil {
		return err
	}
	r, err := ring.NewSPSCReader(pong, opts)
	if err != nil {
		return err
	}
	ctx := context.Background()
	buf := make([]byte, 64)
	for seq := uint64(0); seq < cfg.Count; seq++ {
		fillMsg(buf[:32], seq)
		if err := w.Write(ctx, uint32(seq), buf[:32]); err != nil {
			return err
		}
		n, typ, err := r.Read(ctx, buf)
		if err != nil {
			return err
		}
		got, err := checkMsg(buf[:n], typ)
		if err != nil {
			return err
		}
		if got != seq {
			return fmt.Errorf("pong %d for ping %d", got, seq)
		}
	}
	return w.Close()
}

// runPonger echoes every message from Name back on PongName until the stream closes.
func runPonger(c *proctest.Child) error {
	cfg, opts, seg, err := parseConfig(c)
	if err != nil {
		return err
	}
	pong, err := shm.Open(cfg.PongName, shm.Options{Dir: cfg.Dir})
	if err != nil {
		return err
	}
	r, err := ring.NewSPSCReader(seg, opts)
	if err != nil {
		return err
	}
	w, err := ring.NewSPSCWriter(pong, opts)
	if err != nil {
		return err
	}
	ctx := context.Background()
	buf := make([]byte, 64)
	for {
		n, typ, err := r.Read(ctx, buf)
		if errors.Is(err, ring.ErrEndOfStream) {
			return w.Close()
		}
		if err != nil {
			return err
		}
		if err := w.Write(ctx, typ, buf[:n]); err != nil {
			return err
		}
	}
}

// mpmcSeq combines a writer id and that writer's own counter.
func mpmcSeq(writer, n uint64) uint64 { return writer<<40 | n }

func runMPMCWriter(c *proctest.Child) error {
	cfg, opts, seg, err := parseConfig(c)
	if err != nil {
		return err
	}
	w, err := ring.NewMPMCWriter(seg, opts)
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); cfg.AwaitWriters > 0; time.Sleep(time.Millisecond) {
		st, err := ring.ReadStats(seg)
		if err != nil {
			return err
		}
		// Either all are attached now, or one saw them all and has started writing.
		if st.WritersOpen >= cfg.AwaitWriters || st.Writers.Messages > 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d writers attached", st.WritersOpen)
		}
	}
	if err := writeSequence(c, cfg, w, func(n uint64) uint64 { return mpmcSeq(cfg.WriterID, n) }); err != nil {
		return err
	}
	return w.Close() // the last writer's Close ends the stream
}

// mpmcReport is what an MPMC reader child sends back: per writer, how many messages it got
// and the sum of their counters (with the counts, a parent can tell losses and duplicates).
type mpmcReport struct {
	Count map[uint64]uint64
	Sum   map[uint64]uint64
	Err   string
}

func runMPMCReader(c *proctest.Child) error {
	cfg, opts, seg, err := parseConfig(c)
	if err != nil {
		return err
	}
	r, err := ring.NewMPMCReader(seg, opts)
	if err != nil {
		return err
	}
	c.Point("ready")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep := mpmcReport{Count: map[uint64]uint64{}, Sum: map[uint64]uint64{}}
	last := map[uint64]uint64{}
	for i := uint64(0); ; i++ {
		if i == cfg.KillAt {
			c.Point("before-next")
		}
		rec, err := r.Next(ctx)
		switch {
		case errors.Is(err, ring.ErrEndOfStream):
			rep.Err = "ended"
		case errors.Is(err, ring.ErrPeerDead):
			rep.Err = "peer-dead"
		case err != nil:
			rep.Err = err.Error()
		}
		if err != nil {
			return c.Result(rep)
		}
		if i == cfg.KillAt {
			c.Point("after-borrow")
		}
		seq, err := checkMsg(rec.Data, rec.Type)
		if err != nil {
			rep.Err = err.Error()
			return c.Result(rep)
		}
		writer, n := seq>>40, seq&(1<<40-1)
		// One writer's messages reach any one reader in the order they were written.
		if prev, seen := last[writer]; seen && n <= prev && !cfg.Unordered {
			rep.Err = fmt.Sprintf("writer %d: message %d after %d", writer, n, prev)
			return c.Result(rep)
		}
		last[writer] = n
		rep.Count[writer]++
		rep.Sum[writer] += n
		r.Release()
	}
}

// runMPMCAttachedReader attaches an MPMC reader, reports its process's peer index and waits
// to be killed.
func runMPMCAttachedReader(c *proctest.Child) error {
	_, opts, seg, err := parseConfig(c)
	if err != nil {
		return err
	}
	if _, err := ring.NewMPMCReader(seg, opts); err != nil {
		return err
	}
	if err := c.Result(seg.Peer().Index()); err != nil {
		return err
	}
	select {}
}
