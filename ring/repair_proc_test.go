package ring_test

// Cross-process tests of MPMC repair (issue 11, item 4). Each race found by reading the
// repair code has a test that holds a repairer process at the moment the race turns on
// (ring.SetRepairHook, set in the child) while other processes act, so that the schedule
// that loses a message is played every time, not once in a million runs; and a stress test
// with random kills and random holds checks every acknowledged message.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func init() {
	proctest.Register("repair-reader", runRepairReader)
	proctest.Register("hold-writer", runHoldWriter)
	proctest.Register("stall-reader", runStallReader)
	proctest.Register("hot-loop", runHotLoop)
}

// repairConfig tells a repair-reader or hold-writer child what to do.
type repairConfig struct {
	Dir, Name string
	WriterID  uint64
	// Pause (repair-reader): "dead" holds the first repair round that finds dead claim
	// cells, right after it listed them, until the parent sends 'g'; "skip" holds the first
	// round that decided to skip a slot, before it locks the slot.
	Pause string
	Wait  string // stall-reader: its wait strategy ("" for the default)
}

func (c repairConfig) args() []string {
	b, _ := json.Marshal(c)
	return []string{string(b)}
}

func parseRepairConfig(c *proctest.Child) (repairConfig, *shm.Segment, error) {
	var cfg repairConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return cfg, nil, err
	}
	seg, err := shm.Open(cfg.Name, shm.Options{Dir: cfg.Dir})
	return cfg, seg, err
}

// readCmd reads the next one-byte command the parent sends on the child's file 0.
func readCmd(c *proctest.Child) (byte, error) {
	var b [1]byte
	_, err := io.ReadFull(c.File(0), b[:])
	return b[0], err
}

// runHoldWriter attaches an MPMC writer, sends its peer-table index, and obeys commands:
// r reserves one checked message and reports reserved-N; c commits and reports
// committed-N; f stores the claim a writer stores right before its CAS on the write
// position and reports forged (the parent kills it there); q closes and exits.
func runHoldWriter(c *proctest.Child) error {
	cfg, seg, err := parseRepairConfig(c)
	if err != nil {
		return err
	}
	w, err := ring.NewMPMCWriter(seg, ring.Options{})
	if err != nil {
		return err
	}
	if err := c.Result(seg.Peer().Index()); err != nil {
		return err
	}
	c.Point("attached")
	n := uint64(0)
	for {
		cmd, err := readCmd(c)
		if err != nil {
			return err
		}
		switch cmd {
		case 'r':
			seq := mpmcSeq(cfg.WriterID, n)
			p, err := w.TryReserve(uint32(seq), 32)
			if err != nil {
				return err
			}
			fillMsg(p, seq)
			n++
			c.Point(fmt.Sprintf("reserved-%d", n))
		case 'c':
			if err := w.Commit(); err != nil {
				return err
			}
			c.Point(fmt.Sprintf("committed-%d", n))
		case 'f':
			ring.ForgeWriterClaim(w)
			c.Point("forged")
		case 'q':
			if err := w.Close(); err != nil {
				return err
			}
			return seg.Close()
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
	}
}

// runRepairReader attaches an MPMC reader and obeys commands: m runs one Maintain (the
// liveness check and repair a blocked Next runs) and reports maintained-N; q closes and
// exits. With Pause set, the first repair round that reaches the point it names reports
// paused and waits for a g before it goes on.
func runRepairReader(c *proctest.Child) error {
	cfg, seg, err := parseRepairConfig(c)
	if err != nil {
		return err
	}
	var hookErr error
	if cfg.Pause != "" {
		at := map[string]ring.RepairPoint{"dead": ring.RepairDeadScanned, "skip": ring.RepairSkipDecided}[cfg.Pause]
		paused := false
		ring.SetRepairHook(func(p ring.RepairPoint) {
			if p != at || paused {
				return
			}
			paused = true
			c.Point("paused")
			if cmd, err := readCmd(c); err != nil || cmd != 'g' {
				hookErr = fmt.Errorf("paused repairer got %q, %v", cmd, err)
			}
		})
	}
	r, err := ring.NewMPMCReader(seg, ring.Options{})
	if err != nil {
		return err
	}
	c.Point("attached")
	for n := 1; ; n++ {
		cmd, err := readCmd(c)
		if err != nil {
			return err
		}
		switch cmd {
		case 'm':
			if err := r.Maintain(); err != nil && !errors.Is(err, ring.ErrPeerDead) {
				return err
			}
			if hookErr != nil {
				return hookErr
			}
			c.Point(fmt.Sprintf("maintained-%d", n))
		case 'q':
			if err := r.Close(); err != nil {
				return err
			}
			return seg.Close()
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
	}
}

// cmdProc is a child that reads one-byte commands from a pipe.
type cmdProc struct {
	*proctest.Proc
	t   testing.TB
	cmd *os.File
}

func startCmdProc(t testing.TB, role string, cfg repairConfig, killAt string) cmdProc {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	p := proctest.Start(t, role, proctest.Options{Args: cfg.args(), Files: []*os.File{r}, KillAt: killAt})
	r.Close()
	p.WaitPoint("attached", time.Minute)
	return cmdProc{Proc: p, t: t, cmd: w}
}

// do sends cmd and waits until the child reports point (none if empty).
func (p cmdProc) do(cmd byte, point string) {
	p.t.Helper()
	_, err := p.cmd.Write([]byte{cmd})
	require.NoError(p.t, err)
	if point != "" {
		p.WaitPoint(point, time.Minute)
	}
}

func (p cmdProc) index() int {
	p.t.Helper()
	var idx int
	require.NoError(p.t, p.Result(0, &idx, time.Minute))
	return idx
}

// quit asks the child to close and exit, and checks that it did so cleanly.
func (p cmdProc) quit() {
	p.t.Helper()
	p.do('q', "")
	require.NoError(p.t, p.Wait(time.Minute))
}

// writerCellOf returns the writer cell owned by peer entry idx, if any.
func writerCellOf(seg *shm.Segment, idx int) (ring.Cell, bool) {
	for _, c := range ring.Cells(seg) {
		if c.Owner == idx && c.Role == 1 {
			return c, true
		}
	}
	return ring.Cell{}, false
}

// TestMPMCRepairStaleDeadCell is race (b) of issue 11: a repairer acts on a dead endpoint's
// claim cell as it listed it, but meanwhile another repairer dealt with the cell and freed
// it and a new endpoint took it. Whatever the stale repairer then does to "the dead cell"
// it does to the live endpoint's: it clears its claim, or frees the cell under it (when the
// new endpoint's process also reused the dead process's peer entry, as happens once the
// peer table is full). Either way a live writer's reserved slot no longer shows as claimed,
// the next repair round publishes it as a skip, and a message whose Commit returned nil is
// never delivered.
//
// Processes: R1, a reader held by the repair hook between listing the dead cells and acting
// on them; D, a writer killed holding a claim; N, a writer that attaches after D's cell was
// freed; this process, a second repairer (R2) and the reader that checks what arrives.
func TestMPMCRepairStaleDeadCell(t *testing.T) {
	for _, tc := range []struct {
		name string
		// forge: D dies between storing its claim and its CAS on the write position (its
		// claim then names the position N claims next); otherwise D dies holding a
		// reserved slot and the peer table is full, so that N reuses D's peer entry.
		forge bool
	}{
		{name: "freed-cell-retaken-by-same-peer-entry"},
		{name: "pre-cas-claim-retaken", forge: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testDir(t)
			seg := newSegment(t, dir, "b", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64})
			r2, err := ring.NewMPMCReader(seg, ring.Options{})
			require.NoError(t, err)
			defer r2.Close()
			if !tc.forge {
				// Leave two free peer entries, for R1 and D: N must then take D's.
				for range 64 - 3 {
					h, err := shm.Open("b", shm.Options{Dir: dir})
					require.NoError(t, err)
					t.Cleanup(func() { h.Close() })
				}
			}
			cfg := repairConfig{Dir: dir, Name: "b"}
			r1cfg := cfg
			r1cfg.Pause = "dead"
			r1 := startCmdProc(t, "repair-reader", r1cfg, "")
			dcfg := cfg
			dcfg.WriterID = 1
			killAt, cmd := "reserved-1", byte('r')
			if tc.forge {
				killAt, cmd = "forged", 'f'
			}
			d := startCmdProc(t, "hold-writer", dcfg, killAt)
			dIdx := d.index()
			dCell, ok := writerCellOf(seg, dIdx)
			require.True(t, ok)
			d.do(cmd, "")
			_ = d.Wait(time.Minute)
			require.True(t, d.Killed())

			r1.do('m', "paused") // R1 has listed D's cell as dead, with its claim
			maintain(t, r2)
			_, ok = writerCellOf(seg, dIdx)
			require.False(t, ok, "R2 repaired and freed the dead writer's cell")

			ncfg := cfg
			ncfg.WriterID = 2
			n := startCmdProc(t, "hold-writer", ncfg, "")
			nIdx := n.index()
			nCell, ok := writerCellOf(seg, nIdx)
			require.True(t, ok)
			require.Equal(t, dCell.Index, nCell.Index, "N took the cell D had (the schedule this test is about)")
			if tc.forge {
				n.do('r', "reserved-1") // N claims the position D's claim named
			} else {
				require.Equal(t, dIdx, nIdx, "N reused D's peer entry (the schedule this test is about)")
			}

			r1.do('g', "maintained-1") // R1 acts on what it listed before
			nCell2, ok := writerCellOf(seg, nIdx)
			assert.True(t, ok, "a live writer's claim cell was freed under it by a stale repairer")
			if !tc.forge {
				n.do('r', "reserved-1")
			}
			nCell2, _ = writerCellOf(seg, nIdx)
			assert.NotZero(t, nCell2.Claim, "a live writer's claim was cleared by a stale repairer")

			// A repair round while N holds its slot; then N commits: its message is acknowledged.
			drainAndMaintain(t, r2)
			n.do('c', "committed-1")
			got := drainAndMaintain(t, r2)
			assert.Equal(t, []uint64{mpmcSeq(2, 0)}, got, "N's acknowledged message")
			n.quit()
			r1.quit()
		})
	}
}

// drainAndMaintain reads what r can take now (every record must be a valid checked
// message), runs one Maintain, reads again, and returns the sequence numbers read.
func drainAndMaintain(t *testing.T, r *ring.MPMCReader) []uint64 {
	t.Helper()
	var got []uint64
	drain := func() {
		for {
			rec, err := r.TryNext()
			if errors.Is(err, ring.ErrEmpty) {
				return
			}
			require.NoError(t, err)
			seq, err := checkMsg(rec.Data, rec.Type)
			require.NoError(t, err)
			got = append(got, seq)
			r.Release()
		}
	}
	drain()
	maintain(t, r)
	drain()
	return got
}

// maintain runs r's repair round; ErrPeerDead (every writer that attached died) is no failure.
func maintain(t *testing.T, r *ring.MPMCReader) {
	t.Helper()
	if err := r.Maintain(); err != nil {
		require.ErrorIs(t, err, ring.ErrPeerDead)
	}
}

// TestMPMCRepairSkipRacesLivePublisher is race (a) of issue 11: a repairer decides that the
// slot at the read position belongs to a dead writer and is to be skipped, and is delayed
// before it acts. Meanwhile another repairer skips that slot, readers move on, writers go
// round the ring, and a live writer reserves the same slot for the next lap and writes its
// header. A repairer that wrote the skip marker before winning the slot (the code before
// commit 1dd50ee) then wrote it over the live writer's length: its message, committed and
// acknowledged, read as a skip. The slot lock (sequence base-1, taken by CAS before the
// marker is written) makes the late repairer's CAS fail.
//
// Processes: R1, a reader held by the repair hook after its skip decision; D, a writer
// killed holding a reserved slot; N, the live writer of the next lap; this process, a
// second repairer and the writer and reader of the lap in between.
func TestMPMCRepairSkipRacesLivePublisher(t *testing.T) {
	dir := testDir(t)
	const slots = 64
	seg := newSegment(t, dir, "a", ring.Spec{Kind: ring.MPMC, Size: slots * 64, SlotSize: 64})
	r2, err := ring.NewMPMCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r2.Close()
	cfg := repairConfig{Dir: dir, Name: "a"}
	r1cfg := cfg
	r1cfg.Pause = "skip"
	r1 := startCmdProc(t, "repair-reader", r1cfg, "")
	dcfg := cfg
	dcfg.WriterID = 1
	d := startCmdProc(t, "hold-writer", dcfg, "reserved-1")
	d.do('r', "")
	_ = d.Wait(time.Minute)
	require.True(t, d.Killed())

	r1.do('m', "paused") // R1 decided to skip position 0
	require.Empty(t, drainAndMaintain(t, r2), "position 0 skipped by this process's repair")

	// A whole lap: positions 1 to 63 written and read here, then N reserves position 64,
	// which is slot 0 again, and writes its header there.
	w, err := ring.NewMPMCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	for i := uint64(1); i < slots; i++ {
		p := make([]byte, 32)
		fillMsg(p, mpmcSeq(3, i))
		require.NoError(t, w.TryWrite(uint32(mpmcSeq(3, i)), p))
	}
	require.Len(t, drainAndMaintain(t, r2), slots-1)
	ncfg := cfg
	ncfg.WriterID = 2
	n := startCmdProc(t, "hold-writer", ncfg, "")
	n.do('r', "reserved-1")

	r1.do('g', "maintained-1") // R1 acts on its decision, a lap late
	n.do('c', "committed-1")
	assert.Equal(t, []uint64{mpmcSeq(2, 0)}, drainAndMaintain(t, r2), "N's acknowledged message")
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, 1, st.Readers.Drops, "one slot skipped: D's")
	n.quit()
	r1.quit()
}

// monotonicNow is CLOCK_MONOTONIC, which every process shares (Go's monotonic clock is
// per process).
func monotonicNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// stallMarker is the type of the message the stall benchmark times; on a message of type
// stallHold the stall reader waits for a byte on its file 0 before it goes on.
const (
	stallMarker = 0x57a11
	stallHold   = 0x401d
)

// runStallReader reads an MPMC ring with a blocking Next and sends, for every message of
// type stallMarker, the CLOCK_MONOTONIC time at which Next returned it. It reports the
// point death-repair each time it repairs because a writer it waited behind died, and
// stall-watched when it begins to watch such writers.
func runStallReader(c *proctest.Child) error {
	cfg, seg, err := parseRepairConfig(c)
	if err != nil {
		return err
	}
	var opts ring.Options
	if cfg.Wait != "" {
		if opts.Wait, err = ring.ParseWait(cfg.Wait); err != nil {
			return err
		}
	}
	ring.SetRepairHook(func(p ring.RepairPoint) {
		switch p {
		case ring.RepairOnDeath:
			c.Point("death-repair")
		case ring.RepairStallWatched:
			c.Point("stall-watched")
		}
	})
	r, err := ring.NewMPMCReader(seg, opts)
	if err != nil {
		return err
	}
	c.Point("attached")
	for {
		rec, err := r.Next(context.Background())
		if err != nil {
			return err
		}
		switch rec.Type {
		case stallMarker:
			if err := c.Result(monotonicNow()); err != nil {
				return err
			}
		case stallHold:
			if _, err := readCmd(c); err != nil {
				return err
			}
		}
		r.Release()
	}
}

// TestMPMCDeadClaimRepairedOnDeath: a reader blocked behind the slot of a writer that is
// killed holding it repairs as soon as the writer dies (its process is watched once the stall
// outlasts a live writer's publish), not when its periodic liveness check comes round:
// the message committed after the dead claim arrives after a repair made on the death, under
// each wait strategy that sleeps or spins. The reader's wait begins just before the kill
// (it holds a message until the claim and the message after it are there), so that its
// periodic check, 100 ms into a wait, does not come round first on a busy machine.
func TestMPMCDeadClaimRepairedOnDeath(t *testing.T) {
	for _, wait := range []string{"adaptive", "futex", "spin"} {
		t.Run(wait, func(t *testing.T) {
			dir := testDir(t)
			seg := newSegment(t, dir, "st", ring.Spec{Kind: ring.MPMC, Size: 1 << 16, SlotSize: 64})
			w, err := ring.NewMPMCWriter(seg, ring.Options{})
			require.NoError(t, err)
			defer w.Close()
			r := startCmdProc(t, "stall-reader", repairConfig{Dir: dir, Name: "st", Wait: wait}, "")
			d := startCmdProc(t, "hold-writer", repairConfig{Dir: dir, Name: "st", WriterID: 9}, "")
			msg := make([]byte, 32)
			for range 100 {
				require.NoError(t, w.Write(context.Background(), 1, msg))
			}
			require.NoError(t, w.Write(context.Background(), stallHold, msg))
			d.do('r', "reserved-1")
			require.NoError(t, w.Write(context.Background(), stallMarker, msg))
			r.do('g', "stall-watched") // the reader waits behind d's slot, watching d
			d.Kill()
			_ = d.Wait(time.Minute)
			var got time.Duration
			require.NoError(t, r.Result(0, &got, time.Minute), "the message after the dead claim")
			r.WaitPoint("death-repair", time.Second) // reported before the message arrived
		})
	}
}

// BenchmarkMPMCDeadClaimStall measures how long a writer that dies holding a reserved slot
// stalls a reader blocked behind it: from the SIGKILL to the reader's Next returning the
// message committed after the dead claim, under the reader's wait strategies. "busy": the
// reader had messages up to 2 ms before the death; "idle": it had waited 400 ms (long enough
// for its idle sleep, which watches the writers' deaths). Each op starts a writer process (not
// timed). Run with -benchtime 20x.
func BenchmarkMPMCDeadClaimStall(b *testing.B) {
	for _, bc := range []struct {
		name, wait string
		quiet      time.Duration
	}{
		{"busy/adaptive", "adaptive", 2 * time.Millisecond},
		{"busy/futex", "futex", 2 * time.Millisecond},
		{"busy/spin", "spin", 2 * time.Millisecond},
		{"idle/adaptive", "adaptive", 400 * time.Millisecond},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dir := testDir(b)
			seg := newSegment(b, dir, "st", ring.Spec{Kind: ring.MPMC, Size: 1 << 16, SlotSize: 64})
			w, err := ring.NewMPMCWriter(seg, ring.Options{})
			require.NoError(b, err)
			defer w.Close()
			r := proctest.Start(b, "stall-reader", proctest.Options{Args: repairConfig{Dir: dir, Name: "st", Wait: bc.wait}.args()})
			r.WaitPoint("attached", time.Minute)
			msg := make([]byte, 32)
			var total, worst time.Duration
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				d := startCmdProc(b, "hold-writer", repairConfig{Dir: dir, Name: "st", WriterID: 9}, "")
				for range 100 {
					require.NoError(b, w.Write(context.Background(), 1, msg))
				}
				d.do('r', "reserved-1")
				require.NoError(b, w.Write(context.Background(), stallMarker, msg))
				time.Sleep(bc.quiet)
				b.StartTimer()
				killed := monotonicNow()
				d.Kill()
				var got time.Duration
				require.NoError(b, r.Result(i, &got, time.Minute))
				b.StopTimer()
				_ = d.Wait(time.Minute)
				stall := got - killed
				total += stall
				worst = max(worst, stall)
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms-stall/op")
			b.ReportMetric(float64(worst.Microseconds())/1000, "ms-worst")
		})
	}
}

// runHotLoop attaches an MPMC writer and reader and moves the ring as fast as it can, a
// message written and read at a time, until killed.
func runHotLoop(c *proctest.Child) error {
	_, seg, err := parseRepairConfig(c)
	if err != nil {
		return err
	}
	w, err := ring.NewMPMCWriter(seg, ring.Options{})
	if err != nil {
		return err
	}
	r, err := ring.NewMPMCReader(seg, ring.Options{})
	if err != nil {
		return err
	}
	c.Point("attached")
	msg := make([]byte, 8)
	for {
		if err := w.TryWrite(1, msg); err != nil {
			return err
		}
		if _, err := r.TryNext(); err != nil {
			return err
		}
		r.Release()
	}
}

// TestMPMCAttachWhileRingMoves: endpoints attach over and over while another process moves
// the ring as fast as it can. None is refused with ErrCorrupt: the attach check loaded the
// write position, then the read position, and a read position that had passed the write
// position loaded an instant before read as impossible positions (before the fix this test
// failed within half a second, at attach 17,270 and 22,554 in two runs).
func TestMPMCAttachWhileRingMoves(t *testing.T) {
	dir := testDir(t)
	newSegment(t, dir, "h", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64})
	hot := proctest.Start(t, "hot-loop", proctest.Options{Args: repairConfig{Dir: dir, Name: "h"}.args()})
	hot.WaitPoint("attached", time.Minute)
	h, err := shm.Open("h", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer h.Close()
	d := 3 * time.Second
	if testing.Short() {
		d = time.Second
	}
	n := 0
	for deadline := time.Now().Add(d); time.Now().Before(deadline); n++ {
		r, err := ring.NewMPMCReader(h, ring.Options{})
		require.NoError(t, err, "attach %d", n)
		require.NoError(t, r.Close())
	}
	t.Logf("%d attaches", n)
	hot.Kill()
}
