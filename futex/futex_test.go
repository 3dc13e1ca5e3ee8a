//go:build linux

package futex_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edsrzf/mmap-go"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/futex"
	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/internal/proctest"
)

func TestMain(m *testing.M) {
	proctest.Register("sleeper", runSleeper)
	proctest.Main(m)
}

// sharedPage maps the first page of f.
func sharedPage(f *os.File) ([]byte, func(), error) {
	m, err := mmap.MapRegion(f, 4096, mmap.RDWR, 0, 0)
	if err != nil {
		return nil, nil, err
	}
	return m, func() { _ = m.Unmap() }, nil
}

// sharedWord maps f and returns its first word.
func sharedWord(f *os.File) (*uint32, func(), error) {
	m, unmap, err := sharedPage(f)
	if err != nil {
		return nil, nil, err
	}
	return layout.Uint32(m, 0), unmap, nil
}

func newSharedFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "word"))
	require.NoError(t, err)
	require.NoError(t, f.Truncate(4096))
	t.Cleanup(func() { f.Close() })
	return f
}

// runSleeper waits on the shared word until it becomes non-zero.
func runSleeper(c *proctest.Child) error {
	word, unmap, err := sharedWord(c.File(0))
	if err != nil {
		return err
	}
	defer unmap()
	c.Point("ready")
	for atomic.LoadUint32(word) == 0 {
		if err := futex.Wait(word, 0, 20*time.Second); err != nil {
			return fmt.Errorf("wait: %w", err)
		}
	}
	return c.Result(atomic.LoadUint32(word))
}

// TestWakeAcrossProcesses fails if the futex ops were private (a wake from another process
// would find no waiter) or if Wait did not sleep.
func TestWakeAcrossProcesses(t *testing.T) {
	f := newSharedFile(t)
	word, unmap, err := sharedWord(f)
	require.NoError(t, err)
	defer unmap()

	child := proctest.Start(t, "sleeper", proctest.Options{Files: []*os.File{f}})
	child.WaitPoint("ready", 10*time.Second)

	wakeSleeper(t, word, 7)
	var got uint32
	require.NoError(t, child.Result(0, &got, 10*time.Second))
	require.EqualValues(t, 7, got)
	require.NoError(t, child.Wait(10*time.Second))
}

// wakeSleeper stores v into word and wakes it until Wake reports a sleeper. Wake only counts
// a sleeper, so looping until it reports one proves the child was asleep in the kernel on
// the same word and that the wake reached it.
func wakeSleeper(t *testing.T, word *uint32, v uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	woken := 0
	for woken == 0 && time.Now().Before(deadline) {
		atomic.StoreUint32(word, v)
		var err error
		woken, err = futex.Wake(word, 1)
		require.NoError(t, err)
		if woken == 0 {
			atomic.StoreUint32(word, 0)
			time.Sleep(time.Millisecond)
		}
	}
	require.Equal(t, 1, woken, "no sleeper was ever woken")
}

func TestWaitTimeout(t *testing.T) {
	var word uint32
	start := time.Now()
	err := futex.Wait(&word, 0, 20*time.Millisecond)
	require.True(t, errors.Is(err, futex.ErrTimeout), "got %v", err)
	require.GreaterOrEqual(t, time.Since(start), 15*time.Millisecond)
}

func TestWaitValueChanged(t *testing.T) {
	word := uint32(1)
	// The word does not hold 0, so the kernel returns EAGAIN at once: a spurious, nil return.
	require.NoError(t, futex.Wait(&word, 0, 10*time.Second))
}

func TestWakeNobody(t *testing.T) {
	var word uint32
	n, err := futex.Wake(&word, 1)
	require.NoError(t, err)
	require.Equal(t, 0, n)
	n, err = futex.Wake(&word, 0)
	require.NoError(t, err)
	require.Equal(t, 0, n)
}
