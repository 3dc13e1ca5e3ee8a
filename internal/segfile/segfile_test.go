package segfile_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/segfile"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func TestShmq(t *testing.T) {
	dir := t.TempDir()
	opts := shm.Options{Dir: dir}
	seg, err := ring.Create("ok", ring.Spec{Kind: ring.SPSC, Size: 4096}, opts)
	require.NoError(t, err)
	require.NoError(t, seg.Close())
	good, err := os.ReadFile(filepath.Join(dir, "ok"))
	require.NoError(t, err)
	write := func(name string, b []byte) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}
	write("cut", good[:100]) // cut after the magic: a damaged segment
	write("magic", good[:3]) // cut inside the magic: nothing says it was one
	write("empty", nil)      // likewise
	write("notes", []byte("hello, world, a file that is long enough to hold a magic"))
	require.NoError(t, os.Symlink(filepath.Join(dir, "ok"), filepath.Join(dir, "link")))
	require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600))

	want := map[string]bool{"ok": true, "cut": true, "magic": false, "empty": false, "notes": false, "link": false,
		"fifo": false, "missing": false}
	for name, w := range want {
		s, err := shm.Inspect(name, opts)
		if err == nil {
			s.Close()
		}
		assert.Equal(t, w, segfile.Shmq(dir, name, err), "%s (%v)", name, err)
		assert.Equal(t, w, segfile.HasMagic(filepath.Join(dir, name)), name)
	}
}

func TestProcesses(t *testing.T) {
	alive, dead := segfile.Processes([]shm.PeerInfo{
		{Index: 0, PID: 10, StartTicks: 1, Alive: true},
		{Index: 1, PID: 10, StartTicks: 1, Alive: true}, // the same process, opened twice
		{Index: 2, PID: 11, StartTicks: 5, Alive: true},
		{Index: 3, PID: 12, StartTicks: 7},
		{Index: 4, PID: 12, StartTicks: 7},
		{Index: 5, PID: 12, StartTicks: 9}, // pid 12 reused by another process that died too
	})
	assert.Equal(t, 2, alive)
	assert.Equal(t, 2, dead)
	alive, dead = segfile.Processes(nil)
	assert.Zero(t, alive+dead)
}
