package ring_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

var allWaits = []string{"spin", "sleep:1ms", "futex", "adaptive"}

// TestSPSCAcrossProcesses: a writer process and a reader process under each wait strategy;
// the reader verifies the sequence number and checksum of every message.
func TestSPSCAcrossProcesses(t *testing.T) {
	for _, wait := range allWaits {
		for _, start := range []uint64{0, math.MaxUint64 - 100_000} {
			t.Run(fmtCase(wait, start), func(t *testing.T) {
				dir := testDir(t)
				seg := newSegment(t, dir, "x", ring.Spec{Kind: ring.SPSC, Size: 64 << 10})
				ring.SetPositions(seg, start)
				count := uint64(100_000)
				if testing.Short() {
					count = 10_000
				}
				cfg := procConfig{Dir: dir, Name: "x", Count: count, MinLen: msgHeader, MaxLen: 500, Wait: wait, Batch: 7, KillAt: math.MaxUint64, Close: true,
					UseBatch: start != 0} // near 2^64 the writer reserves with ReserveBatch
				reader := proctest.Start(t, "spsc-reader", proctest.Options{Args: cfg.args()})
				writer := proctest.Start(t, "spsc-writer", proctest.Options{Args: cfg.args()})
				require.NoError(t, writer.Wait(2*time.Minute))
				var rep readerReport
				require.NoError(t, reader.Result(0, &rep, 2*time.Minute))
				require.NoError(t, reader.Wait(time.Minute))
				assert.Equal(t, "ended", rep.Err)
				assert.Equal(t, count, rep.Next)

				st, err := ring.ReadStats(seg)
				require.NoError(t, err)
				assert.Equal(t, count, st.Writers.Messages)
				assert.Equal(t, count, st.Readers.Messages)
				assert.Zero(t, st.Readers.LateWakes+st.Writers.LateWakes, "no wake-up was lost")
				if start != 0 {
					assert.Less(t, st.WritePos, uint64(1<<40), "positions wrapped past 2^64")
				}
			})
		}
	}
}

func fmtCase(wait string, start uint64) string {
	if start == 0 {
		return wait
	}
	return wait + "/near-2^64"
}

// TestSPSCWriterKilled: a writer SIGKILLed before reserving, after reserving and after
// committing message 5000: the reader gets every committed message and then ErrPeerDead; a
// new writer takes the role over and the stream continues.
func TestSPSCWriterKilled(t *testing.T) {
	const killAt = 5000
	for phase, want := range map[string]uint64{"before-reserve": killAt, "after-reserve": killAt, "after-commit": killAt + 1} {
		for _, wait := range []string{"futex", "spin"} {
			t.Run(phase+"/"+wait, func(t *testing.T) {
				dir := testDir(t)
				seg := newSegment(t, dir, "x", ring.Spec{Kind: ring.SPSC, Size: 16 << 10})
				cfg := procConfig{Dir: dir, Name: "x", Count: 1 << 20, MinLen: msgHeader, MaxLen: 200, Wait: wait, Batch: 1, KillAt: killAt}
				reader := proctest.Start(t, "spsc-reader", proctest.Options{Args: cfg.args()})
				writer := proctest.Start(t, "spsc-writer", proctest.Options{Args: cfg.args(), KillAt: phase})
				assert.Error(t, writer.Wait(2*time.Minute))
				require.True(t, writer.Killed())
				var rep readerReport
				require.NoError(t, reader.Result(0, &rep, time.Minute))
				assert.Equal(t, "peer-dead", rep.Err)
				assert.Equal(t, want, rep.Next, "every committed message, nothing more")

				st, err := ring.ReadStats(seg)
				require.NoError(t, err)
				assert.Equal(t, "dead", st.WriterState)

				// The role is free: a new writer continues at the published position, and
				// nothing the dead writer reserved but did not commit shows up.
				require.NoError(t, reader.Wait(time.Minute))
				w, err := ring.NewSPSCWriter(seg, ring.Options{})
				require.NoError(t, err)
				defer w.Close()
				p, err := w.TryReserve(uint32(want), msgLen(want, msgHeader, 200))
				require.NoError(t, err)
				fillMsg(p, want)
				require.NoError(t, w.Commit())
				r, err := ring.NewSPSCReader(seg, ring.Options{})
				require.NoError(t, err)
				defer r.Close()
				rec, err := r.TryNext()
				require.NoError(t, err)
				seq, err := checkMsg(rec.Data, rec.Type)
				require.NoError(t, err)
				assert.Equal(t, want, seq)
				_, err = r.TryNext()
				assert.ErrorIs(t, err, ring.ErrEmpty)
				r.Release()
			})
		}
	}
}

// TestSPSCReaderDiesAsleep: a reader SIGKILLed while asleep in the kernel leaves its waiter
// bit behind; the writer's first wake-up finds nobody, clears the dead bit, and from then on
// publishes without a system call.
func TestSPSCReaderDiesAsleep(t *testing.T) {
	dir := testDir(t)
	seg := newSegment(t, dir, "x", ring.Spec{Kind: ring.SPSC, Size: 16 << 10})
	cfg := procConfig{Dir: dir, Name: "x", Wait: "futex"}
	reader := proctest.Start(t, "spsc-reader", proctest.Options{Args: cfg.args()})
	reader.WaitPoint("ready", 20*time.Second)
	require.Eventually(t, func() bool { return ring.DataWaiters(seg) != 0 }, 20*time.Second, time.Millisecond, "reader asleep")
	reader.Kill()
	_ = reader.Wait(20 * time.Second)
	require.NotZero(t, ring.DataWaiters(seg), "the dead sleeper's bit is still set")

	w, err := ring.NewSPSCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.TryWrite(0, []byte("first")))
	assert.Zero(t, ring.DataWaiters(seg), "repaired by the first wake-up that found nobody")
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	wakes := st.Writers.FutexWakes
	assert.EqualValues(t, 1, wakes)
	for i := range 1000 {
		require.NoError(t, w.TryWrite(uint32(i), []byte("more")))
	}
	st, err = ring.ReadStats(seg)
	require.NoError(t, err)
	assert.Equal(t, wakes, st.Writers.FutexWakes, "no wake-up system call per message for a dead reader")

	// A new reader gets everything, from the last released position.
	r, err := ring.NewSPSCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	rec, err := r.TryNext()
	require.NoError(t, err)
	assert.Equal(t, "first", string(rec.Data))
	r.Release()
}

// TestSPSCWakeHammer: ping-pong across two processes with futex waits on both sides, so
// that every message races a publish against the other side going to sleep. A lost wake-up
// would stall a round until the 100 ms liveness timeout and count as a late wake.
func TestSPSCWakeHammer(t *testing.T) {
	count := uint64(1_000_000)
	if testing.Short() {
		count = 50_000
	}
	dir := testDir(t)
	ping := newSegment(t, dir, "ping", ring.Spec{Kind: ring.SPSC, Size: 4096})
	pong := newSegment(t, dir, "pong", ring.Spec{Kind: ring.SPSC, Size: 4096})
	cfg := procConfig{Dir: dir, Name: "ping", PongName: "pong", Count: count, Wait: "futex"}
	ponger := proctest.Start(t, "ponger", proctest.Options{Args: cfg.args()})
	pinger := proctest.Start(t, "pinger", proctest.Options{Args: cfg.args()})
	start := time.Now()
	require.NoError(t, pinger.Wait(10*time.Minute))
	require.NoError(t, ponger.Wait(time.Minute))
	elapsed := time.Since(start)
	for _, seg := range []*shm.Segment{ping, pong} {
		st, err := ring.ReadStats(seg)
		require.NoError(t, err)
		assert.Equal(t, count, st.Readers.Messages)
		assert.Zero(t, st.Readers.LateWakes, "lost wake-ups on %s", seg.Name())
		t.Logf("%s: %d messages, %d futex waits, %d wakes", seg.Name(), st.Readers.Messages, st.Readers.FutexWaits, st.Writers.FutexWakes)
	}
	t.Logf("%d round trips in %v (%.1f µs each)", count, elapsed, float64(elapsed.Microseconds())/float64(count))
}
