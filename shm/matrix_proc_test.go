//go:build linux

package shm_test

// The fault matrix of issue 11 (item 5), for what package shm owns: each class of fault has
// a test here across processes, or is named in the README's Reliability table with the test
// that covers it elsewhere.

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
	proctest.Register("create-loop", runCreateLoop)
	proctest.Register("sleeper", runSleeper)
	proctest.Register("fill-data", runFillData)
	proctest.Register("create-fsize", runCreateFsize)
	proctest.Register("squatter", runSquatter)
	proctest.Register("perm-check", runPermCheck)
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

// bigSpec is large enough that most of a Create's time is spent allocating and mapping.
var bigSpec = shm.Spec{Kind: testKind, DataSize: 64 << 20}

// runCreateLoop creates, closes and removes segments c-0, c-1, ... in the directory Args[0]
// until it is killed, reporting started once it has made one.
func runCreateLoop(c *proctest.Child) error {
	opts := shm.Options{Dir: c.Args[0]}
	for i := 0; ; i++ {
		name := fmt.Sprintf("c-%d", i)
		s, err := shm.Create(name, bigSpec, opts)
		if err != nil {
			return err
		}
		if err := s.Close(); err != nil {
			return err
		}
		if i == 0 {
			c.Point("started")
		}
		if err := shm.Remove(name, opts); err != nil {
			return err
		}
	}
}

// TestMatrixCreatorKilledMidCreation: a process creating segments is SIGKILLed at random
// moments, most of them inside Create (allocating and mapping 64 MiB). No half-made segment
// ever shows under a segment's name: every name in the directory opens as a valid segment.
// A kill inside Create leaves only a temporary dot-file, which gc removes (its creator is
// dead) once it is older than TempGrace, and which is never listed as a segment.
func TestMatrixCreatorKilledMidCreation(t *testing.T) {
	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	dir := testDir(t)
	opts := shm.Options{Dir: dir}
	midCreation := 0
	for round := range rounds {
		p := proctest.Start(t, "create-loop", proctest.Options{Args: []string{dir}})
		p.WaitPoint("started", time.Minute)
		time.Sleep(time.Duration(1+round*7%40) * time.Millisecond)
		p.Kill()
		_ = p.Wait(time.Minute)
		require.True(t, p.Killed())

		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		var temps []string
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				temps = append(temps, e.Name())
				continue
			}
			s, err := shm.Inspect(e.Name(), opts)
			require.NoError(t, err, "round %d: %s is under a segment's name", round, e.Name())
			require.NoError(t, s.Close())
			require.NoError(t, shm.Remove(e.Name(), opts))
		}
		require.LessOrEqual(t, len(temps), 1, "round %d: one Create was running", round)
		names, err := shm.List(opts)
		require.NoError(t, err)
		assert.Empty(t, names, "round %d: a temporary is never listed", round)
		if len(temps) == 0 {
			continue
		}
		midCreation++
		got, err := shm.GC(opts, true)
		require.NoError(t, err)
		assert.Empty(t, got, "round %d: a fresh temporary is left for TempGrace", round)
		old := time.Now().Add(-2 * shm.TempGrace)
		require.NoError(t, os.Chtimes(filepath.Join(dir, temps[0]), old, old))
		got, err = shm.GC(opts, false)
		require.NoError(t, err)
		require.Len(t, got, 1, "round %d", round)
		assert.Equal(t, temps[0], got[0].Name)
		assert.True(t, got[0].Temporary)
		assert.Equal(t, "creator died during creation", got[0].Reason)
	}
	t.Logf("%d of %d kills landed inside Create", midCreation, rounds)
	assert.Positive(t, midCreation, "no kill landed inside Create: the test proved nothing")
}

// runSleeper reports started and waits to be killed.
func runSleeper(c *proctest.Child) error {
	c.Point("started")
	select {}
}

// TestMatrixPidReuse: a peer's process dies and its pid is given to a new, unrelated process
// (forced here through /proc/sys/kernel/ns_last_pid, which needs root). The dead peer's
// entry still names that pid, and a pid-based check would call it alive; shm's liveness is
// the entry's lock, which the kernel dropped with the dead process: the peer reads as dead,
// its role is free again, and gc takes the segment for abandoned. The zombie case (a killed
// peer nobody has reaped yet) is TestLivenessZombie.
func TestMatrixPidReuse(t *testing.T) {
	const lastPid = "/proc/sys/kernel/ns_last_pid"
	if os.Geteuid() != 0 {
		t.Skip("forcing a pid to be reused needs root (" + lastPid + ")")
	}
	dir := testDir(t)
	createClosed(t, dir, "reuse", spec64K)
	holder := proctest.Start(t, "holder", proctest.Options{Args: []string{dir, "reuse", "role"}})
	holder.WaitPoint("attached", time.Minute)
	var idx int
	require.NoError(t, holder.Result(0, &idx, time.Minute))
	pid := holder.Pid()
	holder.Kill()
	_ = holder.Wait(time.Minute)

	// Other processes on the machine fork too: try until the new process gets the pid.
	var reused *proctest.Proc
	for try := 0; try < 50 && reused == nil; try++ {
		if err := os.WriteFile(lastPid, []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("cannot set %s: %v", lastPid, err)
		}
		p := proctest.Start(t, "sleeper", proctest.Options{})
		p.WaitPoint("started", time.Minute)
		if p.Pid() == pid {
			reused = p
			break
		}
		p.Kill()
		_ = p.Wait(time.Minute)
	}
	if reused == nil {
		t.Skipf("pid %d was not handed out again in 50 tries (a busy machine)", pid)
	}
	require.NoError(t, syscall.Kill(pid, 0), "pid %d names a running process again", pid)

	insp, err := shm.Inspect("reuse", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer insp.Close()
	peers, err := insp.Peers()
	require.NoError(t, err)
	p := findPeer(peers, pid)
	require.NotNil(t, p, "the dead peer's entry still names pid %d", pid)
	assert.Equal(t, idx, p.Index)
	assert.False(t, p.Alive, "a pid in use by another process does not make the peer alive")
	alive, err := insp.Alive(idx)
	require.NoError(t, err)
	assert.False(t, alive)
	held, err := insp.RoleHeld(writerRole)
	require.NoError(t, err)
	assert.False(t, held, "the dead peer's role is free")
	got, err := shm.GC(shm.Options{Dir: dir}, true)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "reuse", got[0].Name, "the segment of a dead peer is abandoned, whoever has its pid now")
}

// runFillData opens the segment Args[1] in Args[0], writes every byte of its data region and
// reports done (a write to a page the filesystem cannot back would kill it with SIGBUS).
func runFillData(c *proctest.Child) error {
	s, err := shm.Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	data := s.Data()
	for i := range data {
		data[i] = byte(i)
	}
	c.Point("done")
	return s.Close()
}

// runCreateFsize limits the size of the files this process may write to Args[1] bytes
// (RLIMIT_FSIZE), as a full filesystem would, and creates the segment Args[2] of 64 MiB in
// Args[0]: it must fail with an error, leaving nothing behind.
func runCreateFsize(c *proctest.Child) error {
	limit, err := strconv.ParseUint(c.Args[1], 10, 64)
	if err != nil {
		return err
	}
	signal.Ignore(syscall.SIGXFSZ) // the error, not the signal
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
		return err
	}
	_, err = shm.Create(c.Args[2], bigSpec, shm.Options{Dir: c.Args[0]})
	if err == nil {
		return errors.New("Create succeeded past the file size limit")
	}
	return c.Result(err.Error())
}

// TestMatrixFullTmpfs: a segment that does not fit its filesystem fails at Create, with
// the system's error and nothing left behind (Create allocates every page up front), never
// later with a SIGBUS in a process writing to it. As root, a 2 MiB tmpfs is mounted for
// the test and filled; without root, a child limits its file size with RLIMIT_FSIZE, which
// fails the allocation the same way (EFBIG instead of ENOSPC).
func TestMatrixFullTmpfs(t *testing.T) {
	dir := t.TempDir()
	if err := mountTmpfs(dir); err != nil {
		t.Logf("cannot mount a tmpfs (%v): simulating a full one with RLIMIT_FSIZE", err)
		p := proctest.Start(t, "create-fsize", proctest.Options{Args: []string{dir, strconv.Itoa(1 << 20), "big"}})
		var msg string
		require.NoError(t, p.Result(0, &msg, time.Minute))
		require.NoError(t, p.Wait(time.Minute))
		assert.Contains(t, msg, "file too large")
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		assert.Empty(t, entries, "a failed Create leaves nothing, not even its temporary")
		return
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	opts := shm.Options{Dir: dir}
	small := shm.Spec{Kind: testKind, DataSize: 1 << 20}
	s, err := shm.Create("fits", small, opts)
	require.NoError(t, err)
	defer s.Close()
	_, err = shm.Create("too-big", small, opts)
	require.ErrorIs(t, err, syscall.ENOSPC)
	names, err := shm.List(opts)
	require.NoError(t, err)
	assert.Equal(t, []string{"fits"}, names)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary left by the failed Create")

	// Fill what is left of the filesystem, then have another process write every byte of
	// the segment: its pages were allocated at Create, so none of them can fault.
	filler, err := os.Create(filepath.Join(dir, "filler"))
	require.NoError(t, err)
	chunk := make([]byte, 64<<10)
	for {
		if _, err := filler.Write(chunk); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			break
		}
	}
	require.NoError(t, filler.Close())
	p := proctest.Start(t, "fill-data", proctest.Options{Args: []string{dir, "fits"}})
	require.NoError(t, p.Wait(time.Minute), "the writer of a segment on a full tmpfs")
}

// mountTmpfs mounts a 2 MiB tmpfs on dir (root only); SHMQ_TEST_NO_MOUNT makes it fail, to
// run the other path of TestMatrixFullTmpfs as root.
func mountTmpfs(dir string) error {
	if os.Getenv("SHMQ_TEST_NO_MOUNT") != "" {
		return errors.New("SHMQ_TEST_NO_MOUNT is set")
	}
	return syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=2m,mode=0700")
}

// runSquatter plants, until killed, things that are not this directory's segments at the
// name Args[1] in Args[0]: a symlink to the segment Args[2] elsewhere, a FIFO, a file of
// text; it removes whatever is at the name before each (a segment too). (Not hard links: a
// hard link removed between Open's checks passes them, see TestMatrixSquatting.)
func runSquatter(c *proctest.Child) error {
	path := filepath.Join(c.Args[0], c.Args[1])
	victim := c.Args[2]
	c.Point("started")
	for i := 0; ; i++ {
		_ = os.Remove(path)
		switch i % 3 {
		case 0:
			_ = os.Symlink(victim, path)
		case 1:
			_ = syscall.Mkfifo(path, 0o600)
		case 2:
			// O_EXCL: a squatter that truncates a live segment is the truncation fault
			// (the README's table), not this one.
			if f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
				_, _ = f.WriteString("squatted")
				f.Close()
			}
		}
	}
}

// TestMatrixSquatting: while another process keeps planting symlinks, FIFOs and foreign
// files at a segment's name (and removing what is there), this process creates and opens
// the name over and over. Create either makes a real segment or says the name is taken
// (ErrExist: it never writes through what it finds); Open either opens a segment made here
// or refuses with ErrUnsafe, ErrNotSegment, ErrTruncated or ErrNotExist, never follows the
// symlink, never hangs on the FIFO; the valid segment the links point to is never attached
// to or changed. A static hard link is refused too (TestOpen_ErrUnsafe), but one that the
// squatter removes between Open's open and its fstat passes the one-link check, and Open
// then attaches to the linked file: a known limit (the file must still be the caller's or a
// trusted owner's, and Linux's protected_hardlinks lets only who may write it link it).
// A squatter that truncates a live segment is the truncation fault.
func TestMatrixSquatting(t *testing.T) {
	dir := testDir(t)
	elsewhere := testDir(t)
	victimSpec := shm.Spec{Kind: testKind, DataSize: 64 << 10, Params: [2]uint64{7, 7}}
	v, err := shm.Create("victim", victimSpec, shm.Options{Dir: elsewhere})
	require.NoError(t, err)
	require.NoError(t, v.Close())
	victim := filepath.Join(elsewhere, "victim")
	before, err := os.ReadFile(victim)
	require.NoError(t, err)

	sq := proctest.Start(t, "squatter", proctest.Options{Args: []string{dir, "name", victim}})
	sq.WaitPoint("started", time.Minute)
	opts := shm.Options{Dir: dir}
	d := time.Second
	if testing.Short() {
		d = 300 * time.Millisecond
	}
	counts := map[string]int{}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		s, err := shm.Create("name", spec64K, opts)
		switch {
		case err == nil:
			counts["created"]++
			require.NoError(t, s.Close())
		case errors.Is(err, shm.ErrExist):
			counts["create: exists"]++
		default:
			t.Fatalf("Create: %v", err)
		}
		s, err = shm.Open("name", opts)
		switch {
		case err == nil:
			counts["opened"]++
			assert.Equal(t, [2]uint64{}, s.Descriptor().Params, "opened the segment a link points to")
			require.NoError(t, s.Close())
		case errors.Is(err, shm.ErrUnsafe):
			counts["open: unsafe"]++
		case errors.Is(err, shm.ErrNotSegment), errors.Is(err, shm.ErrTruncated), errors.Is(err, shm.ErrNotExist):
			counts["open: not a segment or gone"]++
		default:
			t.Fatalf("Open: %v", err)
		}
	}
	sq.Kill()
	_ = sq.Wait(time.Minute)
	t.Logf("%v", counts)
	assert.Positive(t, counts["open: unsafe"], "the squatter's links were met")
	after, err := os.ReadFile(victim)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(before, after), "the segment the links point to is untouched")
}

// runPermCheck runs, as whatever user the parent started it as, the operations Args[2:] on
// the segment Args[1] in Args[0], each written op=want: op is open, inspect, open-trusted
// or inspect-trusted (trusting uid 0), or create (a new segment beside it); want is ok,
// denied (fs.ErrPermission) or unsafe (shm.ErrUnsafe). It fails on the first surprise.
func runPermCheck(c *proctest.Child) error {
	dir, name := c.Args[0], c.Args[1]
	for _, check := range c.Args[2:] {
		op, want, _ := strings.Cut(check, "=")
		opts := shm.Options{Dir: dir}
		if strings.HasSuffix(op, "-trusted") {
			opts.TrustedOwners = []int{0}
		}
		var s *shm.Segment
		var err error
		switch strings.TrimSuffix(op, "-trusted") {
		case "open":
			s, err = shm.Open(name, opts)
		case "inspect":
			s, err = shm.Inspect(name, opts)
		case "create":
			s, err = shm.Create(name+"-new", spec64K, opts)
		default:
			return fmt.Errorf("unknown operation %q", op)
		}
		if s != nil {
			s.Close()
		}
		ok := map[string]bool{"ok": err == nil, "denied": errors.Is(err, fs.ErrPermission), "unsafe": errors.Is(err, shm.ErrUnsafe)}[want]
		if !ok {
			return fmt.Errorf("uid %d: %s: want %s, got %v", os.Geteuid(), op, want, err)
		}
	}
	return nil
}

// TestMatrixPermissions: a segment's file mode and owner decide who may attach (read and
// write) and who may only look (read-only, Inspect), and a process that may not gets
// fs.ErrPermission or shm.ErrUnsafe, never a handle. Root ignores file modes, so as root
// (as here) the checks run in children started as user nobody (65534) from a copy of the
// test binary they can execute; without root only the owner's own read-only case runs.
func TestMatrixPermissions(t *testing.T) {
	dir := testDir(t)
	if os.Geteuid() != 0 {
		path := createClosed(t, dir, "ro", spec64K)
		require.NoError(t, os.Chmod(path, 0o400))
		_, err := shm.Open("ro", shm.Options{Dir: dir})
		assert.ErrorIs(t, err, fs.ErrPermission, "a read-only segment cannot be attached")
		s, err := shm.Inspect("ro", shm.Options{Dir: dir})
		require.NoError(t, err, "but it can be looked at")
		require.NoError(t, s.Close())
		t.Skip("the checks as another user need root")
	}
	const nobody = 65534
	require.NoError(t, os.Chmod(dir, 0o755))
	exe := nobodyExecutable(t)
	run := func(name string, checks ...string) {
		t.Helper()
		cmd, err := proctest.Command("perm-check", append([]string{dir, name}, checks...)...)
		require.NoError(t, err)
		cmd.Path, cmd.Args[0] = exe, exe
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: nobody, Gid: nobody}
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	segment := func(name string, mode os.FileMode, uid, gid int) {
		t.Helper()
		path := createClosed(t, dir, name, spec64K)
		require.NoError(t, os.Chown(path, uid, gid))
		require.NoError(t, os.Chmod(path, mode))
	}
	segment("private", 0o600, 0, 0)
	run("private", "open=denied", "inspect=denied", "open-trusted=denied")
	segment("readonly", 0o400, nobody, nobody) // the owner's own segment, made read-only
	run("readonly", "open=denied", "inspect=ok")
	segment("shared", 0o660, 0, nobody) // shared with a group through its mode
	run("shared", "open=unsafe", "open-trusted=ok", "inspect-trusted=ok")
	segment("group-ro", 0o640, 0, nobody)
	run("group-ro", "open-trusted=denied", "inspect-trusted=ok")
	run("private", "create=denied") // the directory is root's, 0755
	_, err := os.Stat(filepath.Join(dir, "private-new"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

// nobodyExecutable copies the test binary where user nobody can run it.
func nobodyExecutable(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	d, err := os.MkdirTemp("", "shmq-perm-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	require.NoError(t, os.Chmod(d, 0o755))
	b, err := os.ReadFile(self)
	require.NoError(t, err)
	exe := filepath.Join(d, "test.bin")
	require.NoError(t, os.WriteFile(exe, b, 0o755))
	return exe
}
