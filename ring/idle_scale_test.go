package ring_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// Idle waiters at scale (issue 11): many readers waiting on empty rings in many processes
// must cost (almost) nothing, and still learn of their writer's death promptly.

func init() {
	proctest.Register("idle-many-readers", runIdleManyReaders)
	proctest.Register("idle-many-writers", runIdleManyWriters)
}

// idleManyConfig tells an idle-many child which segments to attach to.
type idleManyConfig struct {
	Dir   string
	Names []string
	Wait  string
}

// idleManyReport is what an idle-many-readers child sends back once every reader returned.
type idleManyReport struct {
	Errs     []string // what each reader's Next returned
	Returned []int64  // when, in Unix nanoseconds
}

func parseIdleMany(c *proctest.Child) (idleManyConfig, ring.Options, error) {
	var cfg idleManyConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return cfg, ring.Options{}, err
	}
	wait, err := ring.ParseWait(cfg.Wait)
	return cfg, ring.Options{Wait: wait}, err
}

// runIdleManyWriters attaches a writer to every segment, then idles until it is killed.
func runIdleManyWriters(c *proctest.Child) error {
	cfg, opts, err := parseIdleMany(c)
	if err != nil {
		return err
	}
	for _, name := range cfg.Names {
		seg, err := shm.Open(name, shm.Options{Dir: cfg.Dir})
		if err != nil {
			return err
		}
		if _, err := ring.NewSPSCWriter(seg, opts); err != nil {
			return err
		}
	}
	c.Point("ready")
	time.Sleep(time.Hour)
	return nil
}

// runIdleManyReaders attaches a reader to every segment, each waiting in Next on its own
// goroutine, and reports what each returned, and when, once all have.
func runIdleManyReaders(c *proctest.Child) error {
	cfg, opts, err := parseIdleMany(c)
	if err != nil {
		return err
	}
	var readers []*ring.SPSCReader
	for _, name := range cfg.Names {
		seg, err := shm.Open(name, shm.Options{Dir: cfg.Dir})
		if err != nil {
			return err
		}
		r, err := ring.NewSPSCReader(seg, opts)
		if err != nil {
			return err
		}
		readers = append(readers, r)
	}
	rep := idleManyReport{Errs: make([]string, len(readers)), Returned: make([]int64, len(readers))}
	var wg sync.WaitGroup
	for i, r := range readers {
		wg.Go(func() {
			_, err := r.Next(context.Background())
			rep.Returned[i] = time.Now().UnixNano()
			rep.Errs[i] = fmt.Sprint(err)
		})
	}
	c.Point("ready")
	wg.Wait()
	return c.Result(rep)
}

// idleFleet is procs reader processes with perProc idle readers each, on rings whose
// writers live in one more process.
type idleFleet struct {
	writer  *proctest.Proc
	readers []*proctest.Proc
}

func startIdleFleet(t testing.TB, procs, perProc int, wait string) *idleFleet {
	dir := testDir(t)
	names := make([]string, procs*perProc)
	for i := range names {
		names[i] = fmt.Sprintf("idle-%d", i)
		seg, err := ring.Create(names[i], ring.Spec{Kind: ring.SPSC, Size: 4096}, shm.Options{Dir: dir})
		require.NoError(t, err)
		require.NoError(t, seg.Close()) // the children open it; the directory goes in cleanup
	}
	args := func(names []string) []string {
		b, _ := json.Marshal(idleManyConfig{Dir: dir, Names: names, Wait: wait})
		return []string{string(b)}
	}
	f := &idleFleet{writer: proctest.Start(t, "idle-many-writers", proctest.Options{Args: args(names)})}
	f.writer.WaitPoint("ready", time.Minute)
	for p := range procs {
		f.readers = append(f.readers, proctest.Start(t, "idle-many-readers",
			proctest.Options{Args: args(names[p*perProc : (p+1)*perProc])}))
	}
	for _, r := range f.readers {
		r.WaitPoint("ready", time.Minute)
	}
	return f
}

// cpu is the on-CPU time of every process of the fleet so far.
func (f *idleFleet) cpu() (time.Duration, error) {
	var total time.Duration
	for _, p := range append([]*proctest.Proc{f.writer}, f.readers...) {
		d, err := threadsCPU(p.Pid())
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

// killWriter SIGKILLs the writers' process and returns, for every reader, how long after
// the kill its Next returned, sorted; it fails unless each returned ErrPeerDead.
func (f *idleFleet) killWriter(t testing.TB) []time.Duration {
	killed := time.Now()
	f.writer.Kill()
	var took []time.Duration
	for _, p := range f.readers {
		var rep idleManyReport
		require.NoError(t, p.Result(0, &rep, time.Minute))
		require.NoError(t, p.Wait(time.Minute))
		for i, e := range rep.Errs {
			require.Equal(t, ring.ErrPeerDead.Error(), e, "reader %d", i)
			took = append(took, time.Unix(0, rep.Returned[i]).Sub(killed))
		}
	}
	slices.Sort(took)
	return took
}

// TestIdleWaitersLearnOfDeath: 100 readers in 5 processes, idle long enough to sleep long
// (their writer's death watched, no periodic wake-up), all return ErrPeerDead soon after
// their writers' process is killed: well before their 30 s sleep would end.
func TestIdleWaitersLearnOfDeath(t *testing.T) {
	f := startIdleFleet(t, 5, 20, "adaptive")
	time.Sleep(time.Second) // past the first 200 ms of 100 ms sleeps
	took := f.killWriter(t)
	require.Len(t, took, 100)
	t.Logf("ErrPeerDead after the kill: min %v, median %v, max %v", took[0], took[len(took)/2], took[len(took)-1])
	assert.Less(t, took[len(took)-1], 5*time.Second, "the death woke them; their sleeps last 30 s")
}

// BenchmarkIdleWaiters: 1,000 readers waiting on empty rings in 50 processes (20 each),
// their writers in one more process. cpu% is the on-CPU time of all 51 processes'
// threads while idle, as a percentage of one core; then the writers' process is killed and
// death-ms-p50/-max say how long after the kill the readers' Next returned ErrPeerDead.
// Idle waiters wake once per idleSleep (30 s), all of a process at once: run it for two
// periods or more, go test -run '^$' -bench IdleWaiters -benchtime 60s ./ring
func BenchmarkIdleWaiters(b *testing.B) {
	for _, wait := range []string{"adaptive", "futex"} {
		b.Run(wait, func(b *testing.B) {
			f := startIdleFleet(b, 50, 20, wait)
			time.Sleep(time.Second) // past start-up and the first 200 ms of short sleeps
			cpu0, err := f.cpu()
			if err != nil {
				b.Skip("no /proc schedstat:", err)
			}
			start := time.Now()
			for b.Loop() {
				time.Sleep(100 * time.Millisecond)
			}
			cpu1, err := f.cpu()
			require.NoError(b, err)
			idle := time.Since(start)
			b.ReportMetric(100*(cpu1-cpu0).Seconds()/idle.Seconds(), "cpu%")
			took := f.killWriter(b)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "death-ms-p50")
			b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "death-ms-max")
		})
	}
}
