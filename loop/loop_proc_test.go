package loop_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// One loop goroutine in the test process serves rings written by child processes of the
// test binary (proctest). A writer child gets its rings' names in a writerConfig (JSON in
// its first argument). Messages carry their ring's index and sequence number, a checksum
// over the rest and a length that varies, so the handler can verify every byte and the
// order.

func TestMain(m *testing.M) {
	proctest.Register("loop-writer", runLoopWriter)
	proctest.Main(m)
}

// procTimeout bounds every wait of a child and of the parent, so that a wedged test fails
// rather than hangs.
const procTimeout = 90 * time.Second

// writerConfig tells a writer child what to do.
type writerConfig struct {
	Dir    string
	Rings  []int // the indexes of its rings; ring i is named ringName(i)
	Count  uint64
	MinLen int
	MaxLen int
	Wait   string // the writers' wait strategy
	// KillAfter, when not zero: once every ring has KillAfter messages committed, reserve
	// (and half fill) one more on the first ring and report Point("mid"), where the parent
	// has the child SIGKILLed; it never closes its writers.
	KillAfter uint64
}

func (c writerConfig) args() []string {
	b, _ := json.Marshal(c)
	return []string{string(b)}
}

func ringName(i int) string { return fmt.Sprintf("r%03d", i) }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const msgHeader = 12 // sequence number (8), checksum (4)

// msgSeq is the sequence number message n of ring i carries: the ring in the top bits.
func msgSeq(ring int, n uint64) uint64 { return uint64(ring)<<40 | n }

func msgLen(n uint64, minLen, maxLen int) int {
	return minLen + int((n*7919)%uint64(maxLen-minLen+1))
}

func fillMsg(p []byte, seq uint64) {
	binary.LittleEndian.PutUint64(p, seq)
	for i := msgHeader; i < len(p); i++ {
		p[i] = byte(seq*31 + uint64(i))
	}
	binary.LittleEndian.PutUint32(p[8:], crc32.Checksum(p[msgHeader:], castagnoli))
}

// checkMsg verifies a record of ring i and returns the message number it carries.
func checkMsg(rec ring.Record, i int) (uint64, error) {
	p := rec.Data
	if len(p) < msgHeader {
		return 0, fmt.Errorf("ring %d: record of %d bytes", i, len(p))
	}
	seq := binary.LittleEndian.Uint64(p)
	if sum := crc32.Checksum(p[msgHeader:], castagnoli); sum != binary.LittleEndian.Uint32(p[8:]) {
		return 0, fmt.Errorf("ring %d: message %#x: checksum mismatch", i, seq)
	}
	if rec.Type != uint32(seq) {
		return 0, fmt.Errorf("ring %d: message %#x of type %#x", i, seq, rec.Type)
	}
	if int(seq>>40) != i {
		return 0, fmt.Errorf("ring %d: message %#x of ring %d", i, seq, seq>>40)
	}
	return seq & (1<<40 - 1), nil
}

// runLoopWriter writes Count messages to each of its rings, round robin in bursts of 1 to
// 13 messages per commit, now and then pausing so that the loop falls asleep, then closes
// its writers (the end of each stream).
func runLoopWriter(c *proctest.Child) error {
	var cfg writerConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return err
	}
	wait, err := ring.ParseWait(cfg.Wait)
	if err != nil {
		return err
	}
	ws := make([]ring.Writer, len(cfg.Rings))
	for k, i := range cfg.Rings {
		seg, err := shm.Open(ringName(i), shm.Options{Dir: cfg.Dir})
		if err != nil {
			return err
		}
		if ws[k], err = ring.NewSPSCWriter(seg, ring.Options{Wait: wait}); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	limit := cfg.Count
	if cfg.KillAfter != 0 {
		limit = cfg.KillAfter
	}
	sent := make([]uint64, len(ws))
	for round, left := 0, len(ws); left > 0; round++ {
		for k, w := range ws {
			burst := min(uint64(1+(round*7+k)%13), limit-sent[k])
			if burst == 0 {
				continue
			}
			for range burst {
				n := sent[k]
				seq := msgSeq(cfg.Rings[k], n)
				p, err := w.Reserve(ctx, uint32(seq), msgLen(n, cfg.MinLen, cfg.MaxLen))
				if err != nil {
					return fmt.Errorf("ring %d: reserve %d: %w", cfg.Rings[k], n, err)
				}
				fillMsg(p, seq)
				sent[k]++
			}
			if err := w.Commit(); err != nil {
				return err
			}
			if sent[k] == limit {
				left--
			}
		}
		if round%64 == 63 {
			time.Sleep(time.Millisecond) // let the loop fall asleep now and then
		}
	}
	if cfg.KillAfter != 0 {
		// Die mid-stream with a record reserved and half written: the loop must not see it.
		n := sent[0]
		p, err := ws[0].Reserve(ctx, uint32(msgSeq(cfg.Rings[0], n)), msgLen(n, cfg.MinLen, cfg.MaxLen))
		if err != nil {
			return err
		}
		full := make([]byte, len(p))
		fillMsg(full, msgSeq(cfg.Rings[0], n))
		copy(p, full[:len(p)/2])
		c.Point("mid") // SIGKILLed here
		return errors.New("not killed at mid")
	}
	for _, w := range ws {
		if err := w.Close(); err != nil {
			return err
		}
	}
	return nil
}

// ringState is what the loop's handler of one ring saw. Loop goroutine only (read by the
// test after Run returned, or through Post).
type ringState struct {
	next uint64 // the next message number expected: all before it arrived once, in order, intact
	err  error  // the first bad record
}

type ending struct {
	ring int
	err  error
}

// fanIn is one loop serving rings written by writer children.
type fanIn struct {
	t      *testing.T
	dir    string
	segs   []*shm.Segment
	state  []ringState
	ends   chan ending
	l      *loop.Loop
	errs   chan error // OnError reports
	runErr chan error
}

// newFanIn creates the rings (in a private directory under /dev/shm, checked to be gone
// once the test's cleanup ran) and a loop with a reader of each registered.
func newFanIn(t *testing.T, rings int, size uint64, wait ring.Wait) *fanIn {
	f := &fanIn{t: t, state: make([]ringState, rings), ends: make(chan ending, 2*rings), errs: make(chan error, 100)}
	var dir string
	t.Cleanup(func() { // runs last: after the children are reaped and the segments closed
		_, err := os.Stat(dir)
		assert.True(t, errors.Is(err, os.ErrNotExist), "segment directory %s removed: %v", dir, err)
	})
	opts := testOpts(t)
	dir = opts.Dir
	f.dir = dir
	f.l = loop.New(loop.Options{Wait: wait, OnError: func(_ *loop.Source, err error) {
		select {
		case f.errs <- err:
		default:
		}
	}})
	for i := range rings {
		seg := create(t, opts, ringName(i), ring.Spec{Kind: ring.SPSC, Size: size})
		f.segs = append(f.segs, seg)
		r, err := ring.NewSPSCReader(seg, ring.Options{})
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })
		st := &f.state[i]
		_, err = f.l.Add(r, func(rec ring.Record) error {
			n, err := checkMsg(rec, i)
			if err == nil && n != st.next {
				err = fmt.Errorf("ring %d: message %d, expected %d", i, n, st.next)
			}
			if err != nil {
				if st.err == nil {
					st.err = err
				}
				return nil
			}
			st.next++
			return nil
		}, func(err error) { f.ends <- ending{i, err} })
		require.NoError(t, err)
	}
	return f
}

// run starts the loop, bounded by procTimeout.
func (f *fanIn) run() {
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	f.t.Cleanup(cancel)
	f.runErr = make(chan error, 1)
	go func() { f.runErr <- f.l.Run(ctx) }()
}

// stop stops the loop and requires Run to return nil.
func (f *fanIn) stop() {
	f.l.Stop()
	select {
	case err := <-f.runErr:
		require.NoError(f.t, err, "Run after Stop")
	case <-time.After(procTimeout):
		f.t.Fatal("Run did not return after Stop")
	}
}

// awaitEnds waits until the rings in want reached their onEnd, each once, and returns how.
func (f *fanIn) awaitEnds(want map[int]bool) map[int]error {
	f.t.Helper()
	got := map[int]error{}
	deadline := time.After(procTimeout)
	for len(got) < len(want) {
		select {
		case e := <-f.ends:
			require.True(f.t, want[e.ring], "onEnd of ring %d (%v), which was not to end", e.ring, e.err)
			_, dup := got[e.ring]
			require.False(f.t, dup, "onEnd of ring %d twice", e.ring)
			got[e.ring] = e.err
		case <-deadline:
			f.t.Fatalf("%d of %d rings ended within %v", len(got), len(want), procTimeout)
		}
	}
	return got
}

// counts returns every ring's next expected message, read on the loop's goroutine.
func (f *fanIn) counts() []uint64 {
	done := make(chan []uint64, 1)
	if f.l.Post(func() {
		c := make([]uint64, len(f.state))
		for i := range f.state {
			c[i] = f.state[i].next
		}
		done <- c
	}) != nil {
		return nil
	}
	select {
	case c := <-done:
		return c
	case <-time.After(procTimeout):
		f.t.Fatal("the loop did not run a posted task")
		return nil
	}
}

const (
	procRings   = 100
	procWriters = 4
)

func procCount() uint64 {
	if testing.Short() {
		return 500
	}
	return 5000
}

// startWriters starts procWriters children, writer k writing rings k, k+4, k+8, ... (25
// each); the one at index killed (if any) dies mid-stream after killAfter messages per ring.
func (f *fanIn) startWriters(count uint64, killed int, killAfter uint64) []*proctest.Proc {
	procs := make([]*proctest.Proc, procWriters)
	for k := range procWriters {
		cfg := writerConfig{Dir: f.dir, Count: count, MinLen: msgHeader, MaxLen: 300, Wait: "adaptive"}
		for i := k; i < procRings; i += procWriters {
			cfg.Rings = append(cfg.Rings, i)
		}
		opts := proctest.Options{Args: cfg.args()}
		if k == killed {
			cfg.KillAfter = killAfter
			opts = proctest.Options{Args: cfg.args(), KillAt: "mid"}
		}
		procs[k] = proctest.Start(f.t, "loop-writer", opts)
	}
	return procs
}

// TestLoopFourWriterProcesses: one loop goroutine serves 100 SPSC rings written by 4 child
// processes (25 rings each, in bursts, pausing now and then): every message is handled
// exactly once, in order per ring and intact; every ring's end of stream reaches its onEnd
// as io.EOF; Stop then makes Run return nil. With the futex wait (asleep, one futex_waitv on
// the 100 armed words and the doorbell) and the adaptive one.
func TestLoopFourWriterProcesses(t *testing.T) {
	for _, wait := range []ring.Wait{ring.Futex(), ring.Adaptive(0)} {
		t.Run(wait.Name(), func(t *testing.T) {
			count := procCount()
			f := newFanIn(t, procRings, 8<<10, wait)
			f.run()
			procs := f.startWriters(count, -1, 0)
			all := map[int]bool{}
			for i := range procRings {
				all[i] = true
			}
			ends := f.awaitEnds(all)
			for _, p := range procs {
				require.NoError(t, p.Wait(procTimeout))
			}
			f.stop()
			for i, err := range ends {
				assert.ErrorIs(t, err, io.EOF, "ring %d ends with the end of its stream", i)
			}
			for i := range f.state {
				require.NoError(t, f.state[i].err)
				assert.Equal(t, count, f.state[i].next, "ring %d: every message once", i)
				st, err := ring.ReadStats(f.segs[i])
				require.NoError(t, err)
				assert.Equal(t, count, st.Readers.Messages, "ring %d: read", i)
				assert.Zero(t, st.Readers.Rejected, "ring %d: rejected", i)
			}
			assert.Empty(t, f.errs, "nothing reported to OnError")
		})
	}
}

// TestLoopWriterProcessKilled: of the 4 writer processes, one is SIGKILLed mid-stream (its
// 25 rings have killAfter messages committed each and one more reserved and half written).
// The loop goes on serving the other 75 rings to their end (every message once, in order,
// intact, io.EOF at the end) and has handled exactly the committed messages of the dead
// writer's rings, which end with ring.ErrPeerDead once drained (the loop runs Maintain on
// idle readers). Stop then makes Run return nil.
func TestLoopWriterProcessKilled(t *testing.T) {
	const killed = 1
	count := procCount()
	killAfter := count / 2
	f := newFanIn(t, procRings, 8<<10, ring.Futex())
	f.run()
	procs := f.startWriters(count, killed, killAfter)
	live := map[int]bool{}
	for i := range procRings {
		if i%procWriters != killed {
			live[i] = true
		}
	}
	assert.Error(t, procs[killed].Wait(procTimeout))
	require.True(t, procs[killed].Killed(), "the writer was SIGKILLed")
	all := map[int]bool{}
	for i := range procRings {
		all[i] = true
	}
	ends := f.awaitEnds(all) // the dead writer's rings too: ErrPeerDead, through Maintain
	for k, p := range procs {
		if k != killed {
			require.NoError(t, p.Wait(procTimeout))
		}
	}
	require.Eventually(t, func() bool {
		c := f.counts()
		for i := killed; i < procRings; i += procWriters {
			if c[i] < killAfter {
				return false
			}
		}
		return true
	}, procTimeout, time.Millisecond, "the dead writer's committed messages handled")
	time.Sleep(20 * time.Millisecond) // room for a record that should not come
	f.stop()
	for i, err := range ends {
		if live[i] {
			assert.ErrorIs(t, err, io.EOF, "ring %d ends with the end of its stream", i)
		} else {
			assert.ErrorIs(t, err, ring.ErrPeerDead, "ring %d's writer died", i)
		}
	}
	assert.Empty(t, f.ends, "no ring ended twice")
	for i := range f.state {
		require.NoError(t, f.state[i].err)
		want := count
		if !live[i] {
			want = killAfter
		}
		assert.Equal(t, want, f.state[i].next, "ring %d: every committed message once", i)
	}
	assert.Empty(t, f.errs, "nothing reported to OnError")
}
