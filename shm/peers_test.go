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
	proctest.Register("open-or-create", runOpenOrCreate)
	proctest.Register("late-creator", runLateCreator)
	proctest.Main(m)
}

// writerRole is an exclusive role as a ring would define one.
const writerRole shm.Role = 2

// runHolder opens the segment Args[1] in Args[0] and then waits to be killed. Further
// arguments: "role" takes writerRole, "hold" sets the entry's hold flag. It reports its
// entry's index as a result.
func runHolder(c *proctest.Child) error {
	s, err := shm.Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	for _, a := range c.Args[2:] {
		switch a {
		case "role":
			if _, err := s.AcquireRole(writerRole); err != nil {
				return err
			}
		case "hold":
			s.Peer().SetHold(true)
		}
	}
	if err := c.Result(s.Peer().Index()); err != nil {
		return err
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

// TestPeerPerHandle: every open handle holds exactly one entry of its own, alive while it
// is open and free once it is closed.
func TestPeerPerHandle(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "p", spec64K)
	peers, err := s.Peers()
	require.NoError(t, err)
	require.Len(t, peers, 1, "the creator holds an entry")
	assert.Equal(t, 0, peers[0].Index)
	assert.Equal(t, os.Getpid(), peers[0].PID)
	assert.True(t, peers[0].Alive)
	assert.False(t, peers[0].Hold)
	assert.WithinDuration(t, time.Now(), peers[0].Attached, time.Minute)

	o1, err := shm.Open("p", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer o1.Close()
	o2, err := shm.Open("p", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer o2.Close()
	idx := []int{s.Peer().Index(), o1.Peer().Index(), o2.Peer().Index()}
	assert.ElementsMatch(t, []int{0, 1, 2}, idx, "one entry per handle, none shared")
	assert.Len(t, o1.Peer().Words(), layout.PeerUserSize)
	n, err := s.LivePeers()
	require.NoError(t, err)
	assert.Equal(t, 3, n)

	// The user words of an entry are the same memory through every handle.
	o1.Peer().Words()[0] = 0x5A
	w, err := s.PeerWords(o1.Peer().Index())
	require.NoError(t, err)
	assert.Equal(t, byte(0x5A), w[0])
	_, err = s.PeerWords(layout.PeerCount)
	assert.Error(t, err)
	_, err = s.PeerWords(-1)
	assert.Error(t, err)
	_, err = s.Alive(layout.PeerCount)
	assert.Error(t, err)

	// Another open file description (Inspect) sees them alive.
	insp, err := shm.Inspect("p", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer insp.Close()
	alive, err := insp.Alive(o1.Peer().Index())
	require.NoError(t, err)
	assert.True(t, alive)

	i1 := o1.Peer().Index()
	require.NoError(t, o1.Close())
	alive, err = insp.Alive(i1)
	require.NoError(t, err)
	assert.False(t, alive)
	peers, err = insp.Peers()
	require.NoError(t, err)
	assert.Len(t, peers, 2, "a cleanly closed handle's entry is free")

	// A freed entry is claimed again, with its user words zeroed.
	o3, err := shm.Open("p", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer o3.Close()
	assert.Equal(t, i1, o3.Peer().Index())
	assert.Equal(t, make([]byte, layout.PeerUserSize), o3.Peer().Words())

	require.NoError(t, s.Close())
	require.NoError(t, o2.Close())
	require.NoError(t, o3.Close())
	peers, err = insp.Peers()
	require.NoError(t, err)
	assert.Empty(t, peers, "Close frees the handle's entry")
}

// TestPeerTableFull: the creator and 63 further handles fill the table; the 65th handle is
// refused, and closing one makes room.
func TestPeerTableFull(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "full", spec64K)
	handles := make([]*shm.Segment, 0, layout.PeerCount-1)
	t.Cleanup(func() {
		for _, h := range handles {
			h.Close()
		}
	})
	seen := map[int]bool{s.Peer().Index(): true}
	for i := 1; i < layout.PeerCount; i++ {
		h, err := shm.Open("full", shm.Options{Dir: dir})
		require.NoError(t, err, "handle %d", i)
		handles = append(handles, h)
		require.False(t, seen[h.Peer().Index()], "entry %d given twice", h.Peer().Index())
		seen[h.Peer().Index()] = true
	}
	_, err := shm.Open("full", shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrPeerTableFull)
	n, err := s.LivePeers()
	require.NoError(t, err)
	assert.Equal(t, layout.PeerCount, n)

	require.NoError(t, handles[10].Close())
	h, err := shm.Open("full", shm.Options{Dir: dir})
	require.NoError(t, err)
	handles = append(handles, h)
	assert.Equal(t, handles[10].Peer().Index(), h.Peer().Index())
}

func TestRoleExclusiveInProcess(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "r", spec64K)
	l, err := s.AcquireRole(writerRole)
	require.NoError(t, err)
	_, err = s.AcquireRole(writerRole)
	assert.ErrorIs(t, err, shm.ErrBusy)

	o, err := shm.Open("r", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer o.Close()
	_, err = o.AcquireRole(writerRole)
	assert.ErrorIs(t, err, shm.ErrBusy, "a second open file description conflicts")
	held, err := o.RoleHeld(writerRole)
	require.NoError(t, err)
	assert.True(t, held)

	require.NoError(t, l.Release())
	l2, err := o.AcquireRole(writerRole)
	require.NoError(t, err)
	require.NoError(t, l2.Release())
}

// TestLivenessAcrossProcessKill: a peer in another process reads as alive, then as dead the
// moment it is SIGKILLed; its exclusive role becomes free at once.
func TestLivenessAcrossProcessKill(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "live", spec64K)
	child := proctest.Start(t, "holder", proctest.Options{Args: []string{dir, "live", "role"}})
	child.WaitPoint("attached", 20*time.Second)

	peers, err := s.Peers()
	require.NoError(t, err)
	p := findPeer(peers, child.Pid())
	require.NotNil(t, p, "child's entry is listed")
	assert.True(t, p.Alive)
	_, err = s.AcquireRole(writerRole)
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

	l, err := s.AcquireRole(writerRole)
	require.NoError(t, err, "the dead writer's role is free again")
	require.NoError(t, l.Release())
}

// TestLivenessZombie: a killed process that nobody has reaped yet already reads as dead.
func TestLivenessZombie(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "z", spec64K)
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

// fillTable opens handles until the table has exactly free entries left (the creator's
// included in the count of used ones). The handles are closed when the test ends.
func fillTable(t *testing.T, dir, name string, free int) []*shm.Segment {
	t.Helper()
	insp, err := shm.Inspect(name, shm.Options{Dir: dir})
	require.NoError(t, err)
	peers, err := insp.Peers()
	insp.Close()
	require.NoError(t, err)
	var hs []*shm.Segment
	t.Cleanup(func() {
		for _, h := range hs {
			h.Close()
		}
	})
	for range layout.PeerCount - len(peers) - free {
		h, err := shm.Open(name, shm.Options{Dir: dir})
		require.NoError(t, err)
		hs = append(hs, h)
	}
	return hs
}

// TestOpenReusesDeadEntry: when the table is full of live and dead peers, Open takes a dead
// peer's entry over.
func TestOpenReusesDeadEntry(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "reuse", spec64K)
	fillTable(t, dir, "reuse", 1)
	child := proctest.Start(t, "holder", proctest.Options{Args: []string{dir, "reuse"}})
	child.WaitPoint("attached", 20*time.Second)
	var idx int
	require.NoError(t, child.Result(0, &idx, 20*time.Second))
	_, err := shm.Open("reuse", shm.Options{Dir: dir})
	require.ErrorIs(t, err, shm.ErrPeerTableFull)

	child.Kill()
	_ = child.Wait(20 * time.Second)
	h, err := shm.Open("reuse", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer h.Close()
	assert.Equal(t, idx, h.Peer().Index(), "the dead entry was taken over")
	peers, err := s.Peers()
	require.NoError(t, err)
	assert.Nil(t, findPeer(peers, child.Pid()))
}

// TestHoldAcrossProcessKill: a process killed with its hold flag set leaves its entry
// attached, dead and held; Open does not reuse it until a live peer clears the hold, and
// ClearHold never clears a live peer's flag.
func TestHoldAcrossProcessKill(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "hold", spec64K)
	fillTable(t, dir, "hold", 1)
	child := proctest.Start(t, "holder", proctest.Options{Args: []string{dir, "hold", "hold"}})
	child.WaitPoint("attached", 20*time.Second)
	var idx int
	require.NoError(t, child.Result(0, &idx, 20*time.Second))

	cleared, err := s.ClearHold(idx)
	require.NoError(t, err)
	assert.False(t, cleared, "a live peer's hold is never cleared")
	peers, err := s.Peers()
	require.NoError(t, err)
	p := findPeer(peers, child.Pid())
	require.NotNil(t, p)
	assert.True(t, p.Alive)
	assert.True(t, p.Hold)

	child.Kill()
	_ = child.Wait(20 * time.Second)
	require.True(t, child.Killed())
	peers, err = s.Peers()
	require.NoError(t, err)
	p = findPeer(peers, child.Pid())
	require.NotNil(t, p, "the held entry stays listed")
	assert.False(t, p.Alive)
	assert.True(t, p.Hold)
	for range 3 {
		_, err = shm.Open("hold", shm.Options{Dir: dir})
		require.ErrorIs(t, err, shm.ErrPeerTableFull, "the dead peer's held entry is not reused")
	}

	// The repair: of two repairers, exactly one clears the flag.
	other, err := shm.Inspect("hold", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer other.Close()
	cleared, err = s.ClearHold(idx)
	require.NoError(t, err)
	assert.True(t, cleared)
	cleared, err = s.ClearHold(idx)
	require.NoError(t, err)
	assert.False(t, cleared, "the second repairer loses")
	_, err = s.ClearHold(layout.PeerCount)
	assert.Error(t, err)

	h, err := shm.Open("hold", shm.Options{Dir: dir})
	require.NoError(t, err, "once cleared, the entry is reused")
	defer h.Close()
	assert.Equal(t, idx, h.Peer().Index())
	assert.Equal(t, make([]byte, layout.PeerUserSize), h.Peer().Words())
}

// TestHoldOnClose: a handle closed with its hold flag set leaves its entry as a dead peer's
// (attached, not alive, held); its own ClearHold is refused while it is open.
func TestHoldOnClose(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "hc", spec64K)
	h, err := shm.Open("hc", shm.Options{Dir: dir})
	require.NoError(t, err)
	i := h.Peer().Index()
	h.Peer().SetHold(true)
	cleared, err := h.ClearHold(i)
	require.NoError(t, err)
	assert.False(t, cleared, "the entry is alive: its own handle holds it")
	h.Peer().SetHold(false)
	h.Peer().SetHold(true)
	require.NoError(t, h.Close())

	peers, err := s.Peers()
	require.NoError(t, err)
	require.Len(t, peers, 2)
	assert.Equal(t, i, peers[1].Index)
	assert.False(t, peers[1].Alive)
	assert.True(t, peers[1].Hold)
	assert.Equal(t, os.Getpid(), peers[1].PID)

	h2, err := shm.Open("hc", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer h2.Close()
	assert.NotEqual(t, i, h2.Peer().Index(), "a held entry is skipped")
	cleared, err = h2.ClearHold(i)
	require.NoError(t, err)
	assert.True(t, cleared)

	// Without the hold, Close frees the entry.
	h2.Peer().SetHold(true)
	h2.Peer().SetHold(false)
	i2 := h2.Peer().Index()
	require.NoError(t, h2.Close())
	alive, err := s.Alive(i2)
	require.NoError(t, err)
	assert.False(t, alive)
	peers, err = s.Peers()
	require.NoError(t, err)
	for _, p := range peers {
		assert.NotEqual(t, i2, p.Index, "a closed handle without hold leaves no entry")
	}
}

func TestGC(t *testing.T) {
	dir := testDir(t)
	opts := shm.Options{Dir: dir}

	// A segment whose only peer died.
	createClosed(t, dir, "abandoned", spec64K)
	child := proctest.Start(t, "holder", proctest.Options{Args: []string{dir, "abandoned"}})
	child.WaitPoint("attached", 20*time.Second)
	child.Kill()
	_ = child.Wait(20 * time.Second)

	live := mustCreate(t, dir, "live", spec64K) // its creator (this process) is alive
	_ = live
	createClosed(t, dir, "idle", spec64K) // closed cleanly: kept
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
