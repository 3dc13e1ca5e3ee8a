//go:build linux

package futex_test

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/futex"
	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/internal/proctest"
)

func init() { proctest.Register("waitv-sleeper", runWaitVSleeper) }

// skipWithoutWaitV skips on kernels older than 5.16.
func skipWithoutWaitV(t *testing.T) {
	t.Helper()
	var w uint32 = 1
	if _, err := futex.WaitV([]*uint32{&w}, []uint32{0}, time.Millisecond); errors.Is(err, futex.ErrNotSupported) {
		t.Skip("futex_waitv not supported by this kernel")
	}
}

// runWaitVSleeper waits with WaitV on words 1 to 4 of the shared page and on a word in its
// own memory, until one of them is non-zero, and reports which one woke it.
func runWaitVSleeper(c *proctest.Child) error {
	m, unmap, err := sharedPage(c.File(0))
	if err != nil {
		return err
	}
	defer unmap()
	var own uint32
	words := []*uint32{&own}
	for i := 1; i <= 4; i++ {
		words = append(words, layout.Uint32(m, 64*i))
	}
	vals := make([]uint32, len(words))
	c.Point("ready")
	for {
		for i, w := range words[1:] {
			if atomic.LoadUint32(w) != 0 {
				return c.Result(i + 1)
			}
		}
		if _, err := futex.WaitV(words, vals, 20*time.Second); err != nil {
			return fmt.Errorf("waitv: %w", err)
		}
	}
}

// TestWaitVAcrossProcesses: a wake on any one of the words reaches a sleeper in another
// process (it fails if the shared words were waited on as private).
func TestWaitVAcrossProcesses(t *testing.T) {
	skipWithoutWaitV(t)
	f := newSharedFile(t)
	m, unmap, err := sharedPage(f)
	require.NoError(t, err)
	defer unmap()
	child := proctest.Start(t, "waitv-sleeper", proctest.Options{Files: []*os.File{f}})
	child.WaitPoint("ready", 10*time.Second)
	wakeSleeper(t, layout.Uint32(m, 64*3), 9)
	var got int
	require.NoError(t, child.Result(0, &got, 10*time.Second))
	assert.Equal(t, 3, got)
	require.NoError(t, child.Wait(10*time.Second))
}

func TestWaitVInProcess(t *testing.T) {
	skipWithoutWaitV(t)
	words := make([]uint32, 3)
	ptrs := []*uint32{&words[0], &words[1], &words[2]}
	vals := []uint32{0, 0, 0}
	start := time.Now()
	_, err := futex.WaitV(ptrs, vals, 20*time.Millisecond)
	assert.ErrorIs(t, err, futex.ErrTimeout)
	assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)

	vals[2] = 5 // word 2 does not hold 5: returns at once
	i, err := futex.WaitV(ptrs, vals, 10*time.Second)
	require.NoError(t, err)
	assert.Equal(t, -1, i)
	vals[2] = 0

	done := make(chan int, 1)
	go func() {
		i, err := futex.WaitV(ptrs, vals, 10*time.Second)
		if err != nil {
			i = -2
		}
		done <- i
	}()
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; n == 0 && time.Now().Before(deadline); {
		n, err = futex.Wake(&words[1], 1)
		require.NoError(t, err)
		time.Sleep(time.Millisecond)
	}
	assert.Equal(t, 1, <-done)

	_, err = futex.WaitV(make([]*uint32, futex.MaxWaitV+1), make([]uint32, futex.MaxWaitV+1), 0)
	assert.Error(t, err)
	_, err = futex.WaitV(ptrs, vals[:2], 0)
	assert.Error(t, err)
}
