//go:build linux

package shm_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/shm"
)

func TestMain(m *testing.M) {
	proctest.Register("creator", runCreator)
	proctest.Register("holder", runHolder)
	proctest.Register("zombie-maker", runZombieMaker)
	proctest.Main(m)
}

// runHolder opens the segment Args[1] in Args[0], attaches, optionally takes the writer
// role ("role" in Args[2]), and then waits to be killed.
func runHolder(c *proctest.Child) error {
	s, err := shm.Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	if len(c.Args) > 2 && c.Args[2] == "role" {
		if _, err := s.AcquireRole(shm.RoleWriter); err != nil {
			return err
		}
	}
	c.Point("attached")
	select {}
}

// runZombieMaker starts a holder grandchild, waits until it is attached, SIGKILLs it and
// does not reap it, so the grandchild stays a zombie until this process dies.
func runZombieMaker(c *proctest.Child) error {
	dir, name := c.Args[0], c.Args[1]
	cmd, err := proctest.Command("holder", dir, name)
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	s, err := shm.Inspect(name, shm.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer s.Close()
	for deadline := time.Now().Add(20 * time.Second); ; {
		peers, err := s.Peers()
		if err != nil {
			return err
		}
		if findPeer(peers, pid) != nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("grandchild %d never attached", pid)
		}
		time.Sleep(time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return err
	}
	// The leader thread shows "Z" as soon as it has exited, while the process's other
	// threads may still be closing its files; the process is dead, an unreaped zombie,
	// once it is down to that one thread.
	for deadline := time.Now().Add(20 * time.Second); processState(pid) != "Z" || threadCount(pid) != 1; {
		if time.Now().After(deadline) {
			return fmt.Errorf("grandchild %d never became a zombie (state %q)", pid, processState(pid))
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Result(pid); err != nil {
		return err
	}
	select {} // keep the zombie unreaped until the parent kills us
}

// processState returns the state letter of /proc/PID/stat ("R", "S", "Z", ...) or "" if
// the process is gone.
func processState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+3 > len(b) {
		return ""
	}
	return string(b[i+2])
}

// threadCount returns the Threads: line of /proc/PID/status, or -1.
func threadCount(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err == nil {
				return n
			}
		}
	}
	return -1
}

func findPeer(peers []shm.PeerInfo, pid int) *shm.PeerInfo {
	for i := range peers {
		if peers[i].PID == pid {
			return &peers[i]
		}
	}
	return nil
}

func TestAttachDetach(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "p", spsc64K)
	peers, err := s.Peers()
	require.NoError(t, err)
	require.Len(t, peers, 1, "the creator is attached")
	assert.Equal(t, shm.RoleHandle, peers[0].Role)
	assert.Equal(t, os.Getpid(), peers[0].PID)
	assert.True(t, peers[0].Alive)
	assert.WithinDuration(t, time.Now(), peers[0].Attached, time.Minute)

	w, err := s.Attach(shm.RoleWriter)
	require.NoError(t, err)
	r, err := s.Attach(shm.RoleReader)
	require.NoError(t, err)
	assert.NotEqual(t, w.Index(), r.Index())
	assert.Len(t, w.Words(), layout.PeerUserSize)
	n, err := s.LivePeers()
	require.NoError(t, err)
	assert.Equal(t, 3, n)

	// Another open of the same file (another open file description) sees them alive.
	o, err := shm.Inspect("p", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer o.Close()
	alive, err := o.Alive(w.Index())
	require.NoError(t, err)
	assert.True(t, alive)

	require.NoError(t, w.Detach())
	require.NoError(t, w.Detach())
	peers, err = o.Peers()
	require.NoError(t, err)
	assert.Len(t, peers, 2)
	alive, err = o.Alive(w.Index())
	require.NoError(t, err)
	assert.False(t, alive)

	require.NoError(t, s.Close())
	peers, err = o.Peers()
	require.NoError(t, err)
	assert.Empty(t, peers, "Close detaches every entry it held")
}

func TestPeerTableFull(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "full", spsc64K)
	for i := 1; i < layout.PeerCount; i++ {
		_, err := s.Attach(shm.RoleReader)
		require.NoError(t, err, "entry %d", i)
	}
	_, err := s.Attach(shm.RoleReader)
	assert.ErrorIs(t, err, shm.ErrPeerTableFull)
	_, err = shm.Open("full", shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrPeerTableFull)
}

func TestRoleExclusiveInProcess(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "r", spsc64K)
	l, err := s.AcquireRole(shm.RoleWriter)
	require.NoError(t, err)
	_, err = s.AcquireRole(shm.RoleWriter)
	assert.ErrorIs(t, err, shm.ErrBusy)

	o, err := shm.Open("r", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer o.Close()
	_, err = o.AcquireRole(shm.RoleWriter)
	assert.ErrorIs(t, err, shm.ErrBusy, "a second open file description conflicts")
	held, err := o.RoleHeld(shm.RoleWriter)
	require.NoError(t, err)
	assert.True(t, held)

	require.NoError(t, l.Release())
	l2, err := o.AcquireRole(shm.RoleWriter)
	require.NoError(t, err)
	require.NoError(t, l2.Release())
}

// TestLivenessAcrossProcessKill: a peer in another process reads as alive, then as dead the
// moment it is SIGKILLed; its exclusive role becomes free at once.
func TestLivenessAcrossProcessKill(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "live", spsc64K)
	child := proctest.Start(t, "holder", proctest.Options{Args: []string{dir, "live", "role"}})
	child.WaitPoint("attached", 20*time.Second)

	peers, err := s.Peers()
	require.NoError(t, err)
	p := findPeer(peers, child.Pid())
	require.NotNil(t, p, "child's entry is listed")
	assert.True(t, p.Alive)
	assert.Equal(t, shm.RoleHandle, p.Role)
	_, err = s.AcquireRole(shm.RoleWriter)
	assert.ErrorIs(t, err, shm.ErrBusy)

	child.Kill()
	assert.Error(t, child.Wait(20*time.Second))
	assert.True(t, child.Killed())
	alive, err := s.Alive(p.Index)
	require.NoError(t, err)
	assert.False(t, alive)
	peers, err = s.Peers()
	require.NoError(t, err)
	dead := findPeer(peers, child.Pid())
	require.NotNil(t, dead, "a dead peer stays listed until its entry is reused")
	assert.False(t, dead.Alive)

	l, err := s.AcquireRole(shm.RoleWriter)
	require.NoError(t, err, "the dead writer's role is free again")
	require.NoError(t, l.Release())
}

// TestLivenessZombie: a killed process that nobody has reaped yet already reads as dead.
func TestLivenessZombie(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "z", spsc64K)
	maker := proctest.Start(t, "zombie-maker", proctest.Options{Args: []string{dir, "z"}})
	var pid int
	require.NoError(t, maker.Result(0, &pid, 30*time.Second))
	require.Equal(t, "Z", processState(pid), "grandchild is a zombie while we look")

	peers, err := s.Peers()
	require.NoError(t, err)
	p := findPeer(peers, pid)
	require.NotNil(t, p)
	assert.False(t, p.Alive, "a zombie holds no locks")
	require.Equal(t, "Z", processState(pid), "and it was still a zombie after we looked")
}

// TestAttachReusesDeadEntry: when the table is full of dead peers, Attach takes one over.
func TestAttachReusesDeadEntry(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "reuse", spsc64K)
	for i := 1; i < layout.PeerCount-1; i++ {
		_, err := s.Attach(shm.RoleReader)
		require.NoError(t, err)
	}
	child := proctest.Start(t, "holder", proctest.Options{Args: []string{dir, "reuse"}})
	child.WaitPoint("attached", 20*time.Second)
	_, err := s.Attach(shm.RoleReader)
	require.ErrorIs(t, err, shm.ErrPeerTableFull)

	child.Kill()
	_ = child.Wait(20 * time.Second)
	p, err := s.Attach(shm.RoleWriter)
	require.NoError(t, err)
	peers, err := s.Peers()
	require.NoError(t, err)
	assert.Nil(t, findPeer(peers, child.Pid()), "the dead entry was taken over")
	assert.Equal(t, shm.RoleWriter, peers[len(peers)-1].Role)
	_ = p
}

func TestGC(t *testing.T) {
	dir := testDir(t)
	opts := shm.Options{Dir: dir}

	// A segment whose only peer died.
	createClosed(t, dir, "abandoned", spsc64K)
	child := proctest.Start(t, "holder", proctest.Options{Args: []string{dir, "abandoned"}})
	child.WaitPoint("attached", 20*time.Second)
	child.Kill()
	_ = child.Wait(20 * time.Second)

	live := mustCreate(t, dir, "live", spsc64K) // its creator (this process) is alive
	_ = live
	createClosed(t, dir, "idle", spsc64K) // closed cleanly: kept
	require.NoError(t, os.WriteFile(filepath.Join(dir, "foreign"), []byte("not ours"), 0o600))

	// A temporary left by a creator that died, old enough; and a fresh one.
	stale := filepath.Join(dir, ".shmq-tmp-x.1.00000000")
	require.NoError(t, os.WriteFile(stale, make([]byte, 100), 0o600))
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(stale, old, old))
	fresh := filepath.Join(dir, ".shmq-tmp-y.1.00000000")
	require.NoError(t, os.WriteFile(fresh, make([]byte, 100), 0o600))

	got, err := shm.GC(opts, true)
	require.NoError(t, err)
	var names []string
	for _, c := range got {
		names = append(names, c.Name)
	}
	assert.Equal(t, []string{".shmq-tmp-x.1.00000000", "abandoned"}, names)
	_, err = os.Stat(filepath.Join(dir, "abandoned"))
	require.NoError(t, err, "dry run removes nothing")

	_, err = shm.GC(opts, false)
	require.NoError(t, err)
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	var leftNames []string
	for _, e := range left {
		leftNames = append(leftNames, e.Name())
	}
	assert.ElementsMatch(t, []string{".shmq-tmp-y.1.00000000", "foreign", "idle", "live"}, leftNames)
}
