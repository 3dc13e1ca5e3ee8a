package metrics_test

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/shm"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// expected is what children that recorded values(child, g, perG) leave in the set.
type expected struct {
	events, wrapAdds uint64
	delivered        [2]uint64
	depth            int64
	outOfRange       uint64
	hist             *hdrhistogram.Histogram
}

func expect(children []int, goroutines, perG int) expected {
	e := expected{hist: hdrhistogram.New(1, 10e9, 3)}
	for _, child := range children {
		for g := range goroutines {
			for _, v := range values(child, g, perG) {
				if e.hist.RecordValue(v) != nil {
					e.outOfRange++
				}
			}
		}
		n := uint64(goroutines * perG)
		e.events += n
		e.wrapAdds += n
		e.delivered[child%2] += 2 * n
		e.depth += 2 * int64(n)
	}
	return e
}

func (e expected) check(t *testing.T, snap metrics.Snapshot, wrapStart uint64) {
	t.Helper()
	assert.Equal(t, e.events, find(t, snap, "events_total").Counter)
	assert.Equal(t, e.delivered[0], find(t, snap, "delivered_total", sub(0)...).Counter)
	assert.Equal(t, e.delivered[1], find(t, snap, "delivered_total", sub(1)...).Counter)
	assert.Equal(t, wrapStart+e.wrapAdds, find(t, snap, "wrap_total").Counter) // modulo 2^64
	assert.Equal(t, e.depth, find(t, snap, "depth").Gauge)
	h := find(t, snap, "latency_ns").Histogram
	assert.Equal(t, e.outOfRange, h.OutOfRange)
	requireSameHistogram(t, e.hist, h)
}

// TestProcRecordersAgree: child processes, each with several goroutines and some with
// GOMAXPROCS 1, record into one set at once; the parent's snapshot has exactly the totals
// they recorded and the histogram the library builds from the same values in one
// process: same counts, same percentiles. The wrap counter starts near 2^64 and crosses it.
func TestProcRecordersAgree(t *testing.T) {
	const children, goroutines = 4, 3
	perG := 20000
	if testing.Short() {
		perG = 5000
	}
	dir := testDir(t)
	s, err := metrics.Create("m", procSchema(), shm.Options{Dir: dir})
	require.NoError(t, err)
	defer s.Close()
	wrapStart := uint64(math.MaxUint64 - 1000)
	wrap, err := s.Counter("wrap_total")
	require.NoError(t, err)
	wrap.Add(wrapStart)

	var procs []*proctest.Proc
	var ids []int
	for child := range children {
		cfg := recorderConfig{Dir: dir, Name: "m", Child: child, Goroutines: goroutines, PerG: perG, Wait: true}
		procs = append(procs, proctest.Start(t, "recorder", proctest.Options{Args: cfg.args(),
			Env: []string{fmt.Sprintf("GOMAXPROCS=%d", 1+child%2)}}))
		ids = append(ids, child)
	}
	for _, p := range procs {
		p.WaitPoint("ready", time.Minute)
	}
	start, err := s.Gauge("go")
	require.NoError(t, err)
	start.Set(1)
	for _, p := range procs {
		require.NoError(t, p.Wait(2*time.Minute))
	}
	snap, err := s.Snapshot()
	require.NoError(t, err)
	expect(ids, goroutines, perG).check(t, snap, wrapStart)
	t.Logf("p50 %d, p99 %d, max %d ns over %d values", find(t, snap, "latency_ns").Histogram.P50,
		find(t, snap, "latency_ns").Histogram.P99, find(t, snap, "latency_ns").Histogram.Max, find(t, snap, "latency_ns").Histogram.Count)

	// Another process's read-only view sees the same.
	again, err := metrics.Read("m", shm.Options{Dir: dir})
	require.NoError(t, err)
	again.Taken = snap.Taken
	require.Equal(t, snap, again)
}

// TestProcOpenOrCreateRace: processes released at once all OpenOrCreate one set: exactly
// one creates it, the others open it once it is ready and record into the same series,
// and one that asks for another schema gets ErrMismatch.
func TestProcOpenOrCreateRace(t *testing.T) {
	const children, goroutines, perG = 5, 2, 2000
	dir := testDir(t)
	var procs []*proctest.Proc
	for child := range children + 1 {
		cfg := recorderConfig{Dir: dir, Name: "m", Child: child, Goroutines: goroutines, PerG: perG, Other: child == children}
		procs = append(procs, proctest.Start(t, "racer", proctest.Options{Args: cfg.args()}))
	}
	for _, p := range procs {
		p.WaitPoint("ready", time.Minute)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o600))
	created := 0
	var ids []int
	var mismatches, otherCreated int
	for child, p := range procs {
		require.NoError(t, p.Wait(2*time.Minute))
		var rep racerReport
		require.NoError(t, p.Result(0, &rep, time.Second))
		switch {
		case rep.Err != "":
			require.True(t, rep.Mismatch, "child %d: %s", child, rep.Err)
			mismatches++
		case child == children:
			otherCreated++ // the odd one won the race: every other child must have mismatched
		default:
			ids = append(ids, child)
			if rep.Created {
				created++
			}
		}
	}
	if otherCreated == 1 {
		require.Equal(t, children, mismatches)
		return
	}
	require.Equal(t, 1, created, "exactly one creator")
	require.Equal(t, 1, mismatches, "the child with another schema")
	snap, err := metrics.Read("m", shm.Options{Dir: dir})
	require.NoError(t, err)
	expect(ids, goroutines, perG).check(t, snap, 0)
}

// TestProcKilledRecorder: a recorder SIGKILLed mid-flight leaves a set that reads cleanly
// (nothing to repair: every update is one atomic word) and a peer entry that is free again.
func TestProcKilledRecorder(t *testing.T) {
	dir := testDir(t)
	s, err := metrics.Create("m", procSchema(), shm.Options{Dir: dir})
	require.NoError(t, err)
	defer s.Close()
	cfg := recorderConfig{Dir: dir, Name: "m", Goroutines: 2}
	p := proctest.Start(t, "recorder", proctest.Options{Args: cfg.args()})
	p.WaitPoint("recording", time.Minute)
	p.Kill()
	require.Error(t, p.Wait(time.Minute))
	require.True(t, p.Killed())

	snap, err := s.Snapshot()
	require.NoError(t, err)
	events := find(t, snap, "events_total").Counter
	h := find(t, snap, "latency_ns").Histogram
	require.Greater(t, events, uint64(1000))
	// Each goroutine records the latency, then the event: at most one apart per goroutine.
	recorded := uint64(h.Count) + h.OutOfRange
	require.LessOrEqual(t, recorded-events, uint64(cfg.Goroutines), "latency %d, events %d", recorded, events)
	// Then +2 on the depth gauge, in two steps: +3 and -1.
	require.InDelta(t, 2*float64(events), float64(find(t, snap, "depth").Gauge), float64(3*cfg.Goroutines))

	live, err := shm.Inspect("m", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer live.Close()
	n, err := live.LivePeers()
	require.NoError(t, err)
	require.Equal(t, 1, n, "the killed child's entry is free")
}
