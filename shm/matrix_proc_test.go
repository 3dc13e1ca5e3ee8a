//go:build linux

package shm_test

// The fault matrix of issue 11 (item 5), for what package shm owns: each class of fault has
// a test here across processes, or is named in the README's Reliability table with the test
// that covers it elsewhere.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/shm"
)

func init() {
	proctest.Register("gc", runGC)
	proctest.Register("attach-all", runAttachAll)
}

// gcReport is what a gc child sends back.
type gcReport struct {
	Removed []string
	Err     string
}

// runGC waits for a byte on file 0 (so that several cleaners start together), runs shm.GC
// on the directory Args[0] and reports what it removed.
func runGC(c *proctest.Child) error {
	var b [1]byte
	if _, err := c.File(0).Read(b[:]); err != nil {
		return err
	}
	got, err := shm.GC(shm.Options{Dir: c.Args[0]}, false)
	var rep gcReport
	for _, g := range got {
		rep.Removed = append(rep.Removed, g.Name)
	}
	if err != nil {
		rep.Err = err.Error()
	}
	return c.Result(rep)
}

// runAttachAll opens every segment named in Args[1:] of the directory Args[0], reports
// attached and waits to be killed.
func runAttachAll(c *proctest.Child) error {
	for _, name := range c.Args[1:] {
		if _, err := shm.Open(name, shm.Options{Dir: c.Args[0]}); err != nil {
			return err
		}
	}
	c.Point("attached")
	select {}
}

// TestMatrixRacingCleaners: several processes run gc on one directory at once, as cron
// jobs or two operators do. Each garbage file (segments whose peers all died, temporaries
// of creators that died) is removed by exactly one of them, none fails because another got
// there first, and nothing live is touched. Several rounds, to let the cleaners interleave
// differently.
func TestMatrixRacingCleaners(t *testing.T) {
	const rounds, cleaners, abandoned, temps, live = 4, 3, 40, 100, 3
	for round := range rounds {
		dir := testDir(t)
		var garbage []string
		for i := range abandoned {
			name := fmt.Sprintf("dead-%d", i)
			createClosed(t, dir, name, spec64K)
			garbage = append(garbage, name)
		}
		killer := proctest.Start(t, "attach-all", proctest.Options{Args: append([]string{dir}, garbage...)})
		killer.WaitPoint("attached", time.Minute)
		killer.Kill()
		_ = killer.Wait(time.Minute)
		old := time.Now().Add(-time.Hour)
		for i := range temps {
			name := fmt.Sprintf(".shmq-tmp-t%d.1.%08x", i, i)
			path := filepath.Join(dir, name)
			require.NoError(t, os.WriteFile(path, make([]byte, 100), 0o600))
			require.NoError(t, os.Chtimes(path, old, old))
			garbage = append(garbage, name)
		}
		var keep []string
		for i := range live {
			name := fmt.Sprintf("live-%d", i)
			mustCreate(t, dir, name, spec64K)
			keep = append(keep, name)
		}

		var procs []*proctest.Proc
		var gates []*os.File
		for range cleaners {
			r, w, err := os.Pipe()
			require.NoError(t, err)
			procs = append(procs, proctest.Start(t, "gc", proctest.Options{Args: []string{dir}, Files: []*os.File{r}}))
			r.Close()
			gates = append(gates, w)
		}
		time.Sleep(50 * time.Millisecond) // every cleaner started and waits at its gate
		for _, w := range gates {
			_, err := w.Write([]byte{1})
			require.NoError(t, err)
			w.Close()
		}
		removedBy := map[string]int{}
		var perCleaner []int
		for i, p := range procs {
			var rep gcReport
			require.NoError(t, p.Result(0, &rep, time.Minute))
			require.NoError(t, p.Wait(time.Minute))
			assert.Empty(t, rep.Err, "round %d: cleaner %d failed", round, i)
			for _, n := range rep.Removed {
				removedBy[n]++
			}
			perCleaner = append(perCleaner, len(rep.Removed))
		}
		for _, n := range garbage {
			assert.Equal(t, 1, removedBy[n], "round %d: %s removed by exactly one cleaner", round, n)
		}
		left, err := os.ReadDir(dir)
		require.NoError(t, err)
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		slices.Sort(names)
		assert.Equal(t, keep, names, "round %d: only the live segments are left", round)
		t.Logf("round %d: the cleaners removed %v of %d", round, perCleaner, len(garbage))
	}
}
