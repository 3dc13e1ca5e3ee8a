package ring_test

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/futex"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
)

// Findings of the issue "Ring core, second pass" that involve processes, tested across real
// processes.

// Finding: an SPSC producer failed with ErrPeerDead once the ring filled after its consumer
// restarted. A consumer that closes cleanly is not dead: the producer waits for the next
// one, which continues where the first stopped.
func TestSPSCConsumerRestartsCleanly(t *testing.T) {
	dir := testDir(t)
	seg := newSegment(t, dir, "x", ring.Spec{Kind: ring.SPSC, Size: 4096})
	w, err := ring.NewSPSCWriter(seg, ring.Options{Wait: ring.Futex()})
	require.NoError(t, err)
	defer w.Close()
	const first, total = 100, 1000
	base := procConfig{Dir: dir, Name: "x", Wait: "futex", KillAt: math.MaxUint64}
	c1 := base
	c1.StopAfter = first
	reader1 := proctest.Start(t, "spsc-reader", proctest.Options{Args: c1.args()})
	reader1.WaitPoint("ready", time.Minute)

	ctx := context.Background()
	buf := make([]byte, 64)
	seq := uint64(0)
	write := func(ctx context.Context) error {
		fillMsg(buf, seq)
		err := w.Write(ctx, uint32(seq), buf)
		if err == nil {
			seq++
		}
		return err
	}
	for seq < first {
		require.NoError(t, write(ctx))
	}
	var rep readerReport
	require.NoError(t, reader1.Result(0, &rep, time.Minute))
	require.NoError(t, reader1.Wait(time.Minute))
	assert.Equal(t, "stopped", rep.Err)
	assert.EqualValues(t, first, rep.Next)

	// No reader now: fill the ring, then wait past several liveness checks.
	for w.TryWrite(uint32(seq), fillAndReturn(buf, seq)) == nil {
		seq++
	}
	short, cancel := context.WithTimeout(ctx, 400*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, write(short), context.DeadlineExceeded, "a consumer that closed cleanly is not dead")

	c2 := base
	c2.From = first
	reader2 := proctest.Start(t, "spsc-reader", proctest.Options{Args: c2.args()})
	for seq < total {
		require.NoError(t, write(ctx))
	}
	require.NoError(t, w.Close())
	require.NoError(t, reader2.Result(0, &rep, time.Minute))
	assert.Equal(t, "ended", rep.Err)
	assert.EqualValues(t, total, rep.Next, "every message after the restart, in order")
}

func fillAndReturn(p []byte, seq uint64) []byte { fillMsg(p, seq); return p }

// Finding: when every MPMC producer closed cleanly, consumers got "ring peer died"; and
// ending a stream took a CloseRing that later producers could not undo. Now the last
// producer's Close ends the stream: consumers drain and get io.EOF.
func TestMPMCProducersCloseCleanlyEndStream(t *testing.T) {
	dir := testDir(t)
	seg := newSegment(t, dir, "m", ring.Spec{Kind: ring.MPMC, Size: 64 * 128, SlotSize: 128})
	const per = 5000
	reader := proctest.Start(t, "mpmc-reader", proctest.Options{Args: procConfig{Dir: dir, Name: "m", Wait: "adaptive", KillAt: math.MaxUint64}.args()})
	var ws []*proctest.Proc
	for i := range 2 {
		cfg := procConfig{Dir: dir, Name: "m", Count: per, MinLen: msgHeader, MaxLen: 100, Wait: "adaptive", Batch: 3,
			KillAt: math.MaxUint64, WriterID: uint64(i + 1), AwaitWriters: 2}
		ws = append(ws, proctest.Start(t, "mpmc-writer", proctest.Options{Args: cfg.args()}))
	}
	for _, w := range ws {
		require.NoError(t, w.Wait(time.Minute))
	}
	var rep mpmcReport
	require.NoError(t, reader.Result(0, &rep, time.Minute))
	assert.Equal(t, "ended", rep.Err, "clean closes end the stream; nobody died")
	for id := uint64(1); id <= 2; id++ {
		assert.EqualValues(t, per, rep.Count[id])
		assert.EqualValues(t, per*(per-1)/2, rep.Sum[id])
	}
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.Equal(t, ring.WriterEnded, st.WriterState)

	// The ring is reusable: a new producer starts a new stream.
	cfg := procConfig{Dir: dir, Name: "m", Count: 10, MinLen: msgHeader, MaxLen: 20, Wait: "futex", Batch: 1, KillAt: math.MaxUint64, WriterID: 3}
	reader = proctest.Start(t, "mpmc-reader", proctest.Options{Args: procConfig{Dir: dir, Name: "m", Wait: "futex", KillAt: math.MaxUint64}.args()})
	require.NoError(t, proctest.Start(t, "mpmc-writer", proctest.Options{Args: cfg.args()}).Wait(time.Minute))
	require.NoError(t, reader.Result(0, &rep, time.Minute))
	// The reader may have started before or after the new writer attached: before, it sees
	// the old end at once; after, it gets the new stream. Either way nothing is lost: what
	// it did not read is still in the ring.
	if rep.Count[3] == 0 {
		st, err := ring.ReadStats(seg)
		require.NoError(t, err)
		assert.EqualValues(t, 10, st.Used, "the new stream's messages wait in the ring")
	} else {
		assert.EqualValues(t, 10, rep.Count[3])
	}
}

// ErrPeerDead is for deaths only: a consumer process killed while the producer waits for
// room makes Write fail with ErrPeerDead; once a new consumer attaches, writing goes on.
func TestWriterPeerDeadOnlyWhenReaderKilled(t *testing.T) {
	for _, spec := range smallRings {
		t.Run(spec.Kind.String(), func(t *testing.T) {
			dir := testDir(t)
			seg := newSegment(t, dir, "k", spec)
			w, err := ring.NewWriter(seg, ring.Options{Wait: ring.Futex()})
			require.NoError(t, err)
			defer w.Close()
			role, point := "spsc-reader", "ready"
			if spec.Kind == ring.MPMC {
				role, point = "mpmc-reader", "before-next"
			}
			cfg := procConfig{Dir: dir, Name: "k", Wait: "futex", KillAt: 0}
			victim := proctest.Start(t, role, proctest.Options{Args: cfg.args(), KillAt: point})
			_ = victim.Wait(time.Minute)
			require.True(t, victim.Killed())

			buf := make([]byte, 40)
			seq := uint64(0)
			for w.TryWrite(uint32(seq), fillAndReturn(buf, seq)) == nil {
				seq++
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			assert.ErrorIs(t, w.Write(ctx, uint32(seq), fillAndReturn(buf, seq)), ring.ErrPeerDead)

			cfg.KillAt = math.MaxUint64
			cfg.Unordered = true
			reader := proctest.Start(t, role, proctest.Options{Args: cfg.args()})
			reader.WaitPoint("ready", time.Minute)
			require.NoError(t, w.Write(ctx, uint32(seq), fillAndReturn(buf, seq)), "a new consumer attached")
			require.NoError(t, w.Close())
			require.NoError(t, reader.Wait(time.Minute))
		})
	}
}

// ErrPeerDead for readers: the only producer process is killed; the consumer drains what
// was committed, then gets ErrPeerDead (not io.EOF: nobody ended the stream).
func TestMPMCReaderPeerDeadWhenWriterKilled(t *testing.T) {
	dir := testDir(t)
	seg := newSegment(t, dir, "m", ring.Spec{Kind: ring.MPMC, Size: 64 * 64, SlotSize: 64})
	r, err := ring.NewMPMCReader(seg, ring.Options{Wait: ring.Futex()})
	require.NoError(t, err)
	defer r.Close()
	cfg := procConfig{Dir: dir, Name: "m", Count: 50, MinLen: msgHeader, MaxLen: 40, Wait: "futex", Batch: 1, KillAt: 10, WriterID: 1}
	w := proctest.Start(t, "mpmc-writer", proctest.Options{Args: cfg.args(), KillAt: "after-commit"})
	_ = w.Wait(time.Minute)
	require.True(t, w.Killed())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 11 {
		rec, err := r.Next(ctx)
		require.NoError(t, err, "message %d", i)
		seq, err := checkMsg(rec.Data, rec.Type)
		require.NoError(t, err)
		assert.EqualValues(t, mpmcSeq(1, uint64(i)), seq)
		r.Release()
	}
	_, err = r.Next(ctx)
	assert.ErrorIs(t, err, ring.ErrPeerDead)
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.Equal(t, ring.WriterDead, st.WriterState)
}

// The event-loop hook across processes: the parent arms two readers (as a loop over many
// rings would), sleeps on one armed word in the kernel, and a writer in another process wakes
// it by publishing; Ready then says which ring has data.
func TestArmWakesAcrossProcesses(t *testing.T) {
	if !futex.Supported {
		t.Skip("no futex here")
	}
	dir := testDir(t)
	quiet := newSegment(t, dir, "quiet", ring.Spec{Kind: ring.SPSC, Size: 4096})
	busy := newSegment(t, dir, "x", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64})
	rq, err := ring.NewReader(quiet, ring.Options{})
	require.NoError(t, err)
	defer rq.Close()
	rb, err := ring.NewReader(busy, ring.Options{})
	require.NoError(t, err)
	defer rb.Close()
	wq, armed, err := rq.Arm()
	require.NoError(t, err)
	require.True(t, armed)
	wb, armed, err := rb.Arm()
	require.NoError(t, err)
	require.True(t, armed)

	cfg := procConfig{Dir: dir, Name: "x", Count: 1, MinLen: msgHeader, MaxLen: msgHeader, Wait: "futex", Batch: 1, KillAt: math.MaxUint64, WriterID: 1}
	writer := proctest.Start(t, "mpmc-writer", proctest.Options{Args: cfg.args()})
	start := time.Now()
	for !rb.Ready() && time.Since(start) < 10*time.Second {
		// Returns when the writer changes the word (or at once if it already did).
		if err := futex.Wait(wb.Word, wb.Value, 10*time.Second); err == futex.ErrTimeout {
			break
		}
	}
	assert.Less(t, time.Since(start), 10*time.Second, "woken by the writer, not by the timeout")
	assert.True(t, rb.Ready())
	assert.False(t, rq.Ready())
	assert.Equal(t, wq.Value, atomic.LoadUint32(wq.Word), "the quiet ring's word did not move")
	rq.Disarm()
	rb.Disarm()
	rec, err := rb.TryNext()
	require.NoError(t, err)
	seq, err := checkMsg(rec.Data, rec.Type)
	require.NoError(t, err)
	assert.EqualValues(t, mpmcSeq(1, 0), seq)
	rb.Release()
	require.NoError(t, writer.Wait(time.Minute))
}

// A consumer that attaches takes over from one that died: once it closes cleanly, the
// producer waiting for room waits again instead of reporting the old death.
func TestPeerDeadClearedByNextPeer(t *testing.T) {
	dir := testDir(t)
	seg := newSegment(t, dir, "k", ring.Spec{Kind: ring.SPSC, Size: 4096})
	w, err := ring.NewWriter(seg, ring.Options{Wait: ring.Futex()})
	require.NoError(t, err)
	defer w.Close()
	cfg := procConfig{Dir: dir, Name: "k", Wait: "futex", KillAt: 0}
	victim := proctest.Start(t, "spsc-reader", proctest.Options{Args: cfg.args(), KillAt: "ready"})
	_ = victim.Wait(time.Minute)
	require.True(t, victim.Killed())

	cfg.KillAt, cfg.StopAfter = math.MaxUint64, 1
	next := proctest.Start(t, "spsc-reader", proctest.Options{Args: cfg.args()})
	buf := make([]byte, 40)
	require.NoError(t, w.Write(context.Background(), 0, fillAndReturn(buf, 0)))
	var rep readerReport
	require.NoError(t, next.Result(0, &rep, time.Minute))
	require.NoError(t, next.Wait(time.Minute))
	require.Equal(t, "stopped", rep.Err, "read one and closed cleanly")

	seq := uint64(1)
	for w.TryWrite(uint32(seq), fillAndReturn(buf, seq)) == nil {
		seq++
	}
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, w.Write(ctx, uint32(seq), fillAndReturn(buf, seq)), context.DeadlineExceeded,
		"the dead consumer was replaced, and its replacement closed cleanly")
}

// A reader that dies holding a slot's skip lock (it was publishing a dead writer's slot as
// a skip): another reader finishes the skip, and the records after it arrive. Also from
// position 2^62, where the claim flags once collided with the position's bits.
func TestMPMCSkipLockTakenOver(t *testing.T) {
	for _, p0 := range []uint64{0, 1 << 62} {
		t.Run(fmt.Sprint(p0), func(t *testing.T) {
			dir := testDir(t)
			seg := newSegment(t, dir, "m", ring.Spec{Kind: ring.MPMC, Size: 64 * 64, SlotSize: 64})
			ring.SetMPMCPositions(seg, p0)
			w, err := ring.NewMPMCWriter(seg, ring.Options{})
			require.NoError(t, err)
			defer w.Close()
			child := proctest.Start(t, "mpmc-attached-reader", proctest.Options{Args: procConfig{Dir: dir, Name: "m", Wait: "futex"}.args()})
			var idx int
			require.NoError(t, child.Result(0, &idx, time.Minute))
			child.Kill()
			_ = child.Wait(time.Minute)

			require.NoError(t, w.TryWrite(1, []byte("A"))) // position p0
			// p0+1: claimed by a writer that died, being skipped by the reader that died.
			ring.SetWritePos(seg, p0+2)
			ring.SetSlotSeq(seg, p0+1, ring.SlotBase(seg, p0+1)-1)
			require.True(t, ring.SetSkipClaimOfPeer(seg, idx, p0+1))
			require.NoError(t, w.TryWrite(3, []byte("B"))) // position p0+2

			r, err := ring.NewMPMCReader(seg, ring.Options{Wait: ring.Futex()})
			require.NoError(t, err)
			defer r.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, want := range []string{"A", "B"} {
				rec, err := r.Next(ctx)
				require.NoError(t, err, "waiting for %s", want)
				assert.Equal(t, want, string(rec.Data))
				r.Release()
			}
			st, err := ring.ReadStats(seg)
			require.NoError(t, err)
			assert.EqualValues(t, 1, st.Readers.Drops, "the locked slot was skipped once")
		})
	}
}
