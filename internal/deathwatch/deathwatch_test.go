//go:build linux

package deathwatch_test

import (
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/deathwatch"
)

func TestWatchSeesExit(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	died := make(chan time.Time, 1)
	cancel, err := deathwatch.Watch(cmd.Process.Pid, func() { died <- time.Now() })
	require.NoError(t, err)
	defer cancel()
	select {
	case <-died:
		t.Fatal("reported dead while running")
	case <-time.After(50 * time.Millisecond):
	}
	require.NoError(t, cmd.Process.Kill())
	select {
	case <-died:
	case <-time.After(10 * time.Second):
		t.Fatal("exit not reported")
	}
	_ = cmd.Wait()
}

func TestWatchCancel(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	called := make(chan struct{}, 1)
	cancel, err := deathwatch.Watch(cmd.Process.Pid, func() { called <- struct{}{} })
	require.NoError(t, err)
	cancel()
	cancel() // twice is fine
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	select {
	case <-called:
		t.Fatal("fn ran after cancel")
	case <-time.After(100 * time.Millisecond):
	}
	_, err = deathwatch.Watch(1<<30, func() {})
	assert.Error(t, err, "no such process")
}
