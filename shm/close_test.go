//go:build linux

package shm_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/shm"
)

// mapped reports whether the byte at b[0] lies in a mapping of path, according to
// /proc/self/maps: it tells whether this handle's mapping is still there, whatever other
// handles of the same file this process has mapped.
func mapped(t *testing.T, b []byte, path string) bool {
	t.Helper()
	addr, err := strconv.ParseUint(strings.TrimPrefix(fmt.Sprintf("%p", &b[0]), "0x"), 16, 64)
	require.NoError(t, err)
	maps, err := os.ReadFile("/proc/self/maps")
	require.NoError(t, err)
	for _, line := range strings.Split(string(maps), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 6 || fields[5] != path {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && start <= addr && addr < end {
			return true
		}
	}
	return false
}

// closeWithin runs s.Close on another goroutine and fails the test if it does not return
// within d: a hang is a failure, not a stuck test binary.
func closeWithin(t *testing.T, s *shm.Segment, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("Close did not return within %v", d)
		return nil
	}
}

// TestCloseConcurrent: eight goroutines close one segment at once; all return the same
// result, the mapping is gone afterwards, and nothing panics or unmaps twice (run -race).
func TestCloseConcurrent(t *testing.T) {
	for _, pinned := range []bool{false, true} {
		t.Run(fmt.Sprintf("pinned=%v", pinned), func(t *testing.T) {
			dir := testDir(t)
			s, err := shm.Create("many", spec64K, shm.Options{Dir: dir})
			require.NoError(t, err)
			path, data := filepath.Join(dir, "many"), s.Data()
			if pinned {
				require.NoError(t, s.Pin())
			}
			var ran atomic.Int32
			s.OnClose(func() { ran.Add(1) })
			const n = 8
			errs := make([]error, n)
			var start, wg sync.WaitGroup
			start.Add(1)
			for i := range n {
				wg.Go(func() {
					start.Wait()
					errs[i] = s.Close()
				})
			}
			begin := time.Now()
			start.Done()
			wg.Wait()
			assert.Less(t, time.Since(begin), shm.CloseWait+5*time.Second)
			assert.EqualValues(t, 1, ran.Load(), "OnClose functions run once")
			for i := range n {
				assert.True(t, errs[0] == errs[i], "every Close returns the first one's error: %v, %v", errs[0], errs[i])
			}
			if pinned {
				assert.ErrorIs(t, errs[0], shm.ErrBorrowed)
				assert.True(t, mapped(t, data, path))
				s.Unpin()
			} else {
				assert.NoError(t, errs[0])
			}
			assert.False(t, mapped(t, data, path))
			assert.True(t, errs[0] == s.Close(), "a later Close returns the same error")
		})
	}
}

// TestCloseBorrowed: Close with a pin held elsewhere gives up after CloseWait with
// ErrBorrowed, having detached the peer entry; the memory stays mapped and usable until the
// last Unpin, which unmaps it.
func TestCloseBorrowed(t *testing.T) {
	dir := testDir(t)
	s, err := shm.Create("borrowed", spec64K, shm.Options{Dir: dir})
	require.NoError(t, err)
	path, data := filepath.Join(dir, "borrowed"), s.Data()
	insp, err := shm.Inspect("borrowed", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer insp.Close()

	pinned, unpin, unpinned := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(unpinned)
		if err := s.Pin(); err != nil {
			t.Error(err)
			close(pinned)
			return
		}
		close(pinned)
		<-unpin
		s.Data()[100] = 7 // the borrower still uses the memory after Close returned
		s.Unpin()
	}()
	<-pinned

	begin := time.Now()
	err = closeWithin(t, s, shm.CloseWait+10*time.Second)
	elapsed := time.Since(begin)
	require.ErrorIs(t, err, shm.ErrBorrowed)
	var pe *fs.PathError
	assert.ErrorAs(t, err, &pe)
	assert.GreaterOrEqual(t, elapsed, shm.CloseWait, "Close waited for the pin first")
	assert.ErrorIs(t, s.Pin(), shm.ErrClosed)

	// Everything but the unmapping is done: the entry is free, the file closed.
	peers, err := insp.Peers()
	require.NoError(t, err)
	assert.Empty(t, peers)
	assert.True(t, mapped(t, data, path), "still mapped while the pin is held")
	s.Data()[0] = 1 // readable and writable
	assert.Equal(t, byte(1), s.Data()[0])

	close(unpin)
	<-unpinned
	assert.Equal(t, byte(7), insp.Data()[100], "the borrower's write landed in the segment")
	assert.False(t, mapped(t, data, path), "the last Unpin unmapped")
	assert.ErrorIs(t, s.Close(), shm.ErrBorrowed, "Close keeps its result")
}

// TestCloseWaitsForPins: a pin released within CloseWait makes Close wait for it and then
// succeed; the mapping is there until then.
func TestCloseWaitsForPins(t *testing.T) {
	dir := testDir(t)
	s, err := shm.Create("pinned", spec64K, shm.Options{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, s.Pin())
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	require.Eventually(t, func() bool {
		if err := s.Pin(); err == nil {
			s.Unpin() // too early: Close has not begun
			return false
		}
		return true
	}, 5*time.Second, time.Millisecond)
	select {
	case <-closed:
		t.Fatal("Close returned while a pin was held")
	case <-time.After(shm.CloseWait / 4):
	}
	s.Data()[0] = 1 // still mapped
	s.Unpin()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after Unpin")
	}
	assert.False(t, mapped(t, s.Data(), filepath.Join(dir, "pinned")))
}

// TestOnClose: the functions run once, last registered first, before the segment is
// detached or unmapped and outside its mutex (they may call its methods); removed ones do
// not run, and remove is idempotent everywhere.
func TestOnClose(t *testing.T) {
	dir := testDir(t)
	s, err := shm.Create("hooks", spec64K, shm.Options{Dir: dir})
	require.NoError(t, err)
	path, data := filepath.Join(dir, "hooks"), s.Data()
	role, err := s.AcquireRole(writerRole)
	require.NoError(t, err)

	var order []string
	record := func(name string) func() {
		return func() {
			order = append(order, name)
			// Outside the mutex and before anything is given up: methods work.
			peers, err := s.Peers()
			if assert.NoError(t, err, name) {
				assert.Len(t, peers, 1, name)
			}
			assert.True(t, mapped(t, data, path), name)
			assert.Equal(t, byte(0x11), s.Data()[0], name)
			assert.ErrorIs(t, s.Pin(), shm.ErrClosed, "%s: Pin fails once Close has begun", name)
		}
	}
	s.Data()[0] = 0x11
	s.OnClose(record("first"))
	s.OnClose(func() { // releases the role, as a ring endpoint does
		order = append(order, "release")
		assert.NoError(t, role.Release())
		held, err := s.RoleHeld(writerRole)
		assert.NoError(t, err)
		assert.False(t, held)
		s.Peer().SetHold(false)
	})
	removeMe := s.OnClose(record("removed"))
	var removeSelf func()
	removeSelf = s.OnClose(func() {
		order = append(order, "self-removing")
		removeSelf() // safe from inside fn
		removeSelf()
	})
	removeLater := s.OnClose(record("removed-by-another"))
	s.OnClose(func() {
		order = append(order, "remover")
		removeLater() // removes a function registered before it, not yet run
	})
	// Registered last, so run first; it registers yet another, which runs right after it.
	s.OnClose(func() {
		order = append(order, "last")
		s.OnClose(func() { order = append(order, "late") })
	})
	removeMe()
	removeMe()

	require.NoError(t, closeWithin(t, s, 10*time.Second))
	assert.Equal(t, []string{"last", "late", "remover", "self-removing", "release", "first"}, order)
	assert.False(t, mapped(t, data, path))
	removeSelf() // after Close
	removeMe()

	// Registered after Close: runs at once, on its own goroutine.
	ran := make(chan struct{})
	remove := s.OnClose(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("a function registered after Close never ran")
	}
	remove()
}

// TestOnCloseOrder: without removals, every function runs in reverse order of
// registration. (TestOnClose covers the mixture.)
func TestOnCloseOrder(t *testing.T) {
	s, err := shm.Create("order", spec64K, shm.Options{Dir: testDir(t)})
	require.NoError(t, err)
	var got []int
	for i := range 5 {
		s.OnClose(func() { got = append(got, i) })
	}
	require.NoError(t, closeWithin(t, s, 10*time.Second))
	assert.Equal(t, []int{4, 3, 2, 1, 0}, got)
}

// TestOpenOrCreate: the first call creates, the next opens, a different spec is refused.
func TestOpenOrCreate(t *testing.T) {
	dir := testDir(t)
	opts := shm.Options{Dir: dir}
	spec := shm.Spec{Kind: testKind, DataSize: 64 << 10, Params: [2]uint64{1, 2}}
	a, created, err := shm.OpenOrCreate("ooc", spec, opts)
	require.NoError(t, err)
	defer a.Close()
	assert.True(t, created)
	b, created, err := shm.OpenOrCreate("ooc", spec, opts)
	require.NoError(t, err)
	defer b.Close()
	assert.False(t, created)
	assert.Equal(t, a.Descriptor(), b.Descriptor())
	assert.NotEqual(t, a.Peer().Index(), b.Peer().Index())

	for _, c := range []struct {
		spec shm.Spec
		want []string
	}{
		{shm.Spec{Kind: otherKind, DataSize: 64 << 10, Params: spec.Params}, []string{"shmother", "shmtest"}},
		{shm.Spec{Kind: testKind, DataSize: 128 << 10, Params: spec.Params}, []string{"65536", "131072"}},
		{shm.Spec{Kind: testKind, DataSize: 64 << 10, Params: [2]uint64{1, 3}}, []string{"[1 2]", "[1 3]"}},
	} {
		_, _, err := shm.OpenOrCreate("ooc", c.spec, opts)
		require.ErrorIs(t, err, shm.ErrMismatch, "%+v", c.spec)
		var pe *fs.PathError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "ooc", pe.Path)
		for _, w := range c.want {
			assert.Contains(t, err.Error(), w)
		}
	}
	n, err := a.LivePeers()
	require.NoError(t, err)
	assert.Equal(t, 2, n, "a refused open gives its peer entry back")

	_, _, err = shm.OpenOrCreate("ooc", shm.Spec{Kind: 0, DataSize: 64 << 10}, opts)
	assert.ErrorIs(t, err, shm.ErrInvalidSpec)
	_, _, err = shm.OpenOrCreate("ooc", spec, shm.Options{Dir: dir, Kind: otherKind})
	assert.ErrorIs(t, err, shm.ErrInvalidSpec)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "foreign"), []byte("not a segment"), 0o600))
	_, _, err = shm.OpenOrCreate("foreign", spec, opts)
	assert.ErrorIs(t, err, shm.ErrNotSegment)
}

// runOpenOrCreate calls OpenOrCreate on ooc-0 ... ooc-(Args[1]-1) in Args[0] and reports
// which it created. It keeps every segment open until it is done, so the entries add up.
func runOpenOrCreate(c *proctest.Child) error {
	dir, n := c.Args[0], 0
	fmt.Sscan(c.Args[1], &n)
	var created []int
	var segs []*shm.Segment
	defer func() {
		for _, s := range segs {
			s.Close()
		}
	}()
	for i := range n {
		s, ok, err := shm.OpenOrCreate(fmt.Sprintf("ooc-%d", i), spec64K, shm.Options{Dir: dir})
		if err != nil {
			return err
		}
		segs = append(segs, s)
		if ok {
			created = append(created, i)
		}
	}
	return c.Result(created)
}

// TestOpenOrCreateProcesses: four processes race OpenOrCreate on the same names; all
// succeed, and each name is created by exactly one of them.
func TestOpenOrCreateProcesses(t *testing.T) {
	dir := testDir(t)
	const procs, names = 4, 100
	children := make([]*proctest.Proc, procs)
	for i := range children {
		children[i] = proctest.Start(t, "open-or-create", proctest.Options{Args: []string{dir, fmt.Sprint(names)}})
	}
	creator := map[int]int{}
	for i, c := range children {
		var created []int
		require.NoError(t, c.Result(0, &created, 60*time.Second))
		require.NoError(t, c.Wait(60*time.Second))
		for _, n := range created {
			prev, dup := creator[n]
			require.False(t, dup, "ooc-%d created by both child %d and child %d", n, prev, i)
			creator[n] = i
		}
	}
	assert.Len(t, creator, names)
	assertNoTemporaries(t, dir)
}

// runLateCreator waits until the parent removes the file Args[1] (its signal that WaitOpen
// is waiting), then creates the segment Args[2] in Args[0] and waits to be killed.
func runLateCreator(c *proctest.Child) error {
	for {
		if _, err := os.Stat(c.Args[1]); errors.Is(err, fs.ErrNotExist) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	s, err := shm.Create(c.Args[2], spec64K, shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	defer s.Close()
	c.Point("created")
	select {}
}

// TestWaitOpen: WaitOpen waits until another process creates the name, then opens it.
func TestWaitOpen(t *testing.T) {
	dir := testDir(t)
	gate := filepath.Join(dir, "gate") // not a valid segment name's file: just a signal
	require.NoError(t, os.WriteFile(gate, nil, 0o600))
	child := proctest.Start(t, "late-creator", proctest.Options{Args: []string{dir, gate, "late"}})

	type result struct {
		s   *shm.Segment
		err error
	}
	got := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		s, err := shm.WaitOpen(ctx, "late", shm.Options{Dir: dir})
		got <- result{s, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("WaitOpen returned before the segment existed: %v", r.err)
	case <-time.After(50 * time.Millisecond):
	}
	require.NoError(t, os.Remove(gate))
	child.WaitPoint("created", 20*time.Second)
	select {
	case r := <-got:
		require.NoError(t, r.err)
		defer r.s.Close()
		assert.EqualValues(t, child.Pid(), r.s.Descriptor().CreatorPID)
		require.NotNil(t, r.s.Peer())
	case <-time.After(20 * time.Second):
		t.Fatal("WaitOpen did not return after the segment was created")
	}
}

// TestWaitOpenTimeout: a name that never appears ends with an error that is both
// ErrNotExist and the context's; other errors return at once.
func TestWaitOpenTimeout(t *testing.T) {
	dir := testDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	defer cancel()
	begin := time.Now()
	s, err := shm.WaitOpen(ctx, "never", shm.Options{Dir: dir})
	assert.Nil(t, s)
	assert.ErrorIs(t, err, shm.ErrNotExist)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, time.Since(begin), 60*time.Millisecond)
	assert.Less(t, time.Since(begin), 5*time.Second)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "foreign"), []byte("not a segment"), 0o600))
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin = time.Now()
	_, err = shm.WaitOpen(ctx, "foreign", shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrNotSegment)
	assert.Less(t, time.Since(begin), 5*time.Second)

	// An existing segment is opened even with a context that is already done.
	createClosed(t, dir, "there", spec64K)
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	s, err = shm.WaitOpen(done, "there", shm.Options{Dir: dir})
	require.NoError(t, err)
	s.Close()
}

// TestRemoveOnClose: a handle that owns removal removes its own file when it closes, and
// never a successor that took the name meanwhile.
func TestRemoveOnClose(t *testing.T) {
	dir := testDir(t)
	opts := shm.Options{Dir: dir, RemoveOnClose: true}
	s, err := shm.Create("own", spec64K, opts)
	require.NoError(t, err)
	o, err := shm.Open("own", shm.Options{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, o.Close())
	_, err = os.Stat(filepath.Join(dir, "own"))
	require.NoError(t, err, "a handle without RemoveOnClose leaves the name")
	require.NoError(t, s.Close())
	_, err = os.Stat(filepath.Join(dir, "own"))
	assert.ErrorIs(t, err, fs.ErrNotExist, "RemoveOnClose removed the name")

	// A successor under the same name survives the first handle's Close.
	old, err := shm.Create("name", spec64K, opts)
	require.NoError(t, err)
	require.NoError(t, shm.Remove("name", shm.Options{Dir: dir}))
	succ := mustCreate(t, dir, "name", spec64K)
	require.NoError(t, old.Close(), "a name that is gone or taken is not Close's error")
	st, err := os.Stat(filepath.Join(dir, "name"))
	require.NoError(t, err, "the successor was not removed")
	assert.EqualValues(t, succ.Descriptor().FileSize(), st.Size())
	o2, err := shm.Open("name", shm.Options{Dir: dir})
	require.NoError(t, err)
	assert.Equal(t, succ.Descriptor(), o2.Descriptor())
	require.NoError(t, o2.Close())
}

// TestSegmentRemove: Remove removes the handle's own file now, and refuses a successor.
func TestSegmentRemove(t *testing.T) {
	dir := testDir(t)
	s := mustCreate(t, dir, "r", spec64K)
	require.NoError(t, s.Remove())
	_, err := os.Stat(filepath.Join(dir, "r"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.ErrorIs(t, s.Remove(), shm.ErrNotExist, "already gone")
	s.Data()[0] = 1 // the mapping outlives the name

	succ := mustCreate(t, dir, "r", spec64K)
	err = s.Remove()
	assert.ErrorIs(t, err, shm.ErrNotExist, "the name refers to another file")
	_, err = os.Stat(filepath.Join(dir, "r"))
	require.NoError(t, err, "the successor is still there")
	require.NoError(t, s.Close())

	// An inspected handle may remove its file too: it changes the directory, not the file.
	insp, err := shm.Inspect("r", shm.Options{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, insp.Remove())
	require.NoError(t, insp.Close())
	_, err = os.Stat(filepath.Join(dir, "r"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	require.NoError(t, succ.Close())
}
