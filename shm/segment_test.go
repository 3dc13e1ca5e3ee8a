//go:build linux

package shm_test

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/shm"
)

var spec64K = shm.Spec{Kind: testKind, DataSize: 64 << 10}

// testDir returns a private segment directory, removed with everything in it after the test.
// It lives in /dev/shm when that exists, so tests exercise tmpfs like production does.
func testDir(t *testing.T) string {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	d, err := os.MkdirTemp(base, "shmq-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func mustCreate(t *testing.T, dir, name string, spec shm.Spec) *shm.Segment {
	t.Helper()
	s, err := shm.Create(name, spec, shm.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// createClosed makes a segment file and closes it, leaving a valid file behind.
func createClosed(t *testing.T, dir, name string, spec shm.Spec) string {
	t.Helper()
	s, err := shm.Create(name, spec, shm.Options{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	return filepath.Join(dir, name)
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"orders", true},
		{"a", true},
		{"A-Z_0.9", true},
		{strings.Repeat("x", shm.MaxNameLen), true},
		{"", false},
		{strings.Repeat("x", shm.MaxNameLen+1), false},
		{".hidden", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"../etc/passwd", false},
		{"with space", false},
		{"tab\t", false},
		{"nul\x00", false},
		{"é", false},
		{"star*", false},
	} {
		err := shm.ValidateName(tc.name)
		if tc.ok {
			assert.NoError(t, err, "%q", tc.name)
		} else {
			assert.ErrorIs(t, err, shm.ErrInvalidName, "%q", tc.name)
		}
	}
	// Every entry point refuses a bad name before touching the file system.
	dir := testDir(t)
	_, err := shm.Create("a/b", spec64K, shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrInvalidName)
	_, err = shm.Open("../x", shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrInvalidName)
	_, err = shm.Inspect(".x", shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrInvalidName)
	assert.ErrorIs(t, shm.Remove("a/b", shm.Options{Dir: dir}), shm.ErrInvalidName)
}

func TestCreateOpenRoundTrip(t *testing.T) {
	dir := testDir(t)
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	spec := shm.Spec{Kind: testKind, DataSize: 1 << 20, Params: [2]uint64{3, 1 << 40}}
	s := mustCreate(t, dir, "orders", spec)
	d := s.Descriptor()
	assert.Equal(t, testKind, d.Kind)
	assert.EqualValues(t, 2, d.VersionMajor)
	assert.EqualValues(t, 1<<20, d.DataSize)
	assert.Equal(t, spec.Params, d.Params)
	assert.EqualValues(t, layout.KindHeaderOffset, d.KindHeaderOffset)
	assert.EqualValues(t, layout.KindHeaderSize, d.KindHeaderSize)
	assert.EqualValues(t, os.Getpid(), d.CreatorPID)
	assert.Len(t, s.Data(), 1<<20)
	assert.Len(t, s.Header(), layout.DataOffset)
	kh := s.Header()[d.KindHeaderOffset : d.KindHeaderOffset+d.KindHeaderSize]
	assert.Equal(t, make([]byte, layout.KindHeaderSize), kh, "the kind header is zero at creation")
	require.NotNil(t, s.Peer())
	assert.Equal(t, 0, s.Peer().Index(), "the creator holds entry 0")

	st, err := os.Lstat(filepath.Join(dir, "orders"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o600), st.Mode().Perm())
	assert.EqualValues(t, layout.DataOffset+1<<20, st.Size())

	// Data written through one mapping is seen through another.
	s.Data()[12345] = 0xAB
	kh[100] = 0xCD
	o, err := shm.Open("orders", shm.Options{Dir: dir, Kind: testKind})
	require.NoError(t, err)
	defer o.Close()
	assert.Equal(t, d, o.Descriptor())
	assert.Equal(t, byte(0xAB), o.Data()[12345])
	assert.Equal(t, byte(0xCD), o.Header()[d.KindHeaderOffset+100])

	// A chosen mode is applied whatever the umask.
	s2, err := shm.Create("shared", spec64K, shm.Options{Dir: dir, Mode: 0o660})
	require.NoError(t, err)
	defer s2.Close()
	st, err = os.Lstat(filepath.Join(dir, "shared"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o660), st.Mode().Perm())
}

func TestCreateInvalidSpec(t *testing.T) {
	dir := testDir(t)
	for _, spec := range []shm.Spec{
		{Kind: testKind, DataSize: 3000},
		{Kind: testKind, DataSize: 100000},
		{Kind: testKind, DataSize: 2048},
		{Kind: testKind, DataSize: 0},
		{Kind: testKind, DataSize: 1 << 41},
		{Kind: 0, DataSize: 4096},
	} {
		_, err := shm.Create("x", spec, shm.Options{Dir: dir})
		assert.ErrorIs(t, err, shm.ErrInvalidSpec, "%+v", spec)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "a refused Create must leave nothing behind")
}

func TestCreateExisting(t *testing.T) {
	dir := testDir(t)
	mustCreate(t, dir, "taken", spec64K)
	_, err := shm.Create("taken", spec64K, shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrExist)
	// A foreign file of that name is not replaced either.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "foreign"), []byte("keep me"), 0o600))
	_, err = shm.Create("foreign", spec64K, shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrExist)
	b, err := os.ReadFile(filepath.Join(dir, "foreign"))
	require.NoError(t, err)
	assert.Equal(t, "keep me", string(b))
	assertNoTemporaries(t, dir)
}

func assertNoTemporaries(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), "."), "temporary left behind: %s", e.Name())
	}
}

// TestConcurrentCreateGoroutines: many creators in one process, one name: one wins.
func TestConcurrentCreateGoroutines(t *testing.T) {
	dir := testDir(t)
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	segs := make([]*shm.Segment, n)
	for i := range n {
		wg.Go(func() { segs[i], errs[i] = shm.Create("contended", spec64K, shm.Options{Dir: dir}) })
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		if err == nil {
			wins++
			segs[i].Close()
		} else {
			assert.ErrorIs(t, err, shm.ErrExist)
		}
	}
	assert.Equal(t, 1, wins)
	assertNoTemporaries(t, dir)
}

// runCreator tries to create each of the names race-0 ... race-(n-1) and reports which it won.
func runCreator(c *proctest.Child) error {
	dir, n := c.Args[0], 0
	fmt.Sscan(c.Args[1], &n)
	var won []int
	for i := range n {
		s, err := shm.Create(fmt.Sprintf("race-%d", i), spec64K, shm.Options{Dir: dir})
		switch {
		case err == nil:
			won = append(won, i)
			s.Close()
		case !errors.Is(err, shm.ErrExist):
			return err
		}
	}
	return c.Result(won)
}

// TestConcurrentCreateProcesses: four processes race for the same 200 names; every name is
// won exactly once, every loser gets ErrExist (runCreator fails on any other error).
func TestConcurrentCreateProcesses(t *testing.T) {
	dir := testDir(t)
	const procs, names = 4, 200
	children := make([]*proctest.Proc, procs)
	for i := range children {
		children[i] = proctest.Start(t, "creator", proctest.Options{Args: []string{dir, fmt.Sprint(names)}})
	}
	winner := map[int]int{}
	for i, c := range children {
		var won []int
		require.NoError(t, c.Result(0, &won, 60*time.Second))
		require.NoError(t, c.Wait(60*time.Second))
		for _, n := range won {
			prev, dup := winner[n]
			require.False(t, dup, "race-%d created by both child %d and child %d", n, prev, i)
			winner[n] = i
		}
	}
	assert.Len(t, winner, names)
	assertNoTemporaries(t, dir)
}

func TestInspectChangesNothing(t *testing.T) {
	dir := testDir(t)
	path := createClosed(t, dir, "quiet", spec64K)
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	st0, err := os.Stat(path)
	require.NoError(t, err)

	s, err := shm.Inspect("quiet", shm.Options{Dir: dir})
	require.NoError(t, err)
	assert.True(t, s.ReadOnly())
	assert.Nil(t, s.Peer(), "an inspected segment holds no peer entry")
	_, err = s.AcquireRole(1)
	assert.ErrorIs(t, err, shm.ErrReadOnly)
	_, err = s.ClearHold(0)
	assert.ErrorIs(t, err, shm.ErrReadOnly)
	peers, err := s.Peers()
	require.NoError(t, err)
	assert.Empty(t, peers)
	require.NoError(t, s.Close())

	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after)
	st1, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, st0.ModTime(), st1.ModTime())
}

func TestCloseIdempotent(t *testing.T) {
	dir := testDir(t)
	s, err := shm.Create("c", spec64K, shm.Options{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	_, err = s.AcquireRole(1)
	assert.ErrorIs(t, err, shm.ErrClosed)
	_, err = s.Peers()
	assert.ErrorIs(t, err, shm.ErrClosed)
	_, err = s.PeerWords(0)
	assert.ErrorIs(t, err, shm.ErrClosed)
	_, err = s.ClearHold(0)
	assert.ErrorIs(t, err, shm.ErrClosed)
	assert.ErrorIs(t, s.Remove(), shm.ErrClosed)
	assert.ErrorIs(t, s.Pin(), shm.ErrClosed)
	s.Peer().SetHold(true) // does nothing after Close, and does not fault
	_, err = os.Stat(filepath.Join(dir, "c"))
	assert.NoError(t, err, "Close removes nothing by default")
}

func TestListAndRemove(t *testing.T) {
	dir := testDir(t)
	createClosed(t, dir, "b", spec64K)
	createClosed(t, dir, "a", spec64K)
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".hidden"), nil, 0o600))
	names, err := shm.List(shm.Options{Dir: dir})
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, names)

	require.NoError(t, shm.Remove("a", shm.Options{Dir: dir}))
	assert.ErrorIs(t, shm.Remove("a", shm.Options{Dir: dir}), shm.ErrNotExist)
	_, err = shm.Open("a", shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrNotExist)
}

func TestDirFromEnvironment(t *testing.T) {
	dir := testDir(t)
	t.Setenv("SHMQ_DIR", dir)
	s, err := shm.Create("env", spec64K, shm.Options{})
	require.NoError(t, err)
	defer s.Close()
	assert.Equal(t, dir, s.Dir())
	_, err = os.Stat(filepath.Join(dir, "env"))
	assert.NoError(t, err)
	// An explicit option wins over the environment.
	assert.Equal(t, "/elsewhere", shm.Options{Dir: "/elsewhere"}.ResolvedDir())
	t.Setenv("SHMQ_DIR", "")
	assert.Equal(t, shm.DefaultDir, shm.Options{}.ResolvedDir())
}

// TestDefaultDir creates a real segment in /dev/shm under a unique name.
func TestDefaultDir(t *testing.T) {
	if _, err := os.Stat(shm.DefaultDir); err != nil {
		t.Skip("no /dev/shm")
	}
	t.Setenv("SHMQ_DIR", "")
	name := fmt.Sprintf("shmq-test-default-%d", os.Getpid())
	s, err := shm.Create(name, spec64K, shm.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close(); shm.Remove(name, shm.Options{}) })
	_, err = os.Stat(filepath.Join(shm.DefaultDir, name))
	assert.NoError(t, err)
}

// --- validation: one test per error, each corrupting real bytes of a real file ---

func openErr(t *testing.T, dir, name string) error {
	t.Helper()
	s, err := shm.Open(name, shm.Options{Dir: dir})
	if err == nil {
		s.Close()
		t.Fatalf("Open(%s) succeeded", name)
	}
	// Inspect validates identically.
	s, ierr := shm.Inspect(name, shm.Options{Dir: dir})
	if ierr == nil {
		s.Close()
		t.Fatalf("Inspect(%s) succeeded", name)
	}
	var pe *fs.PathError
	require.ErrorAs(t, err, &pe, "errors are *fs.PathError naming the segment")
	assert.Equal(t, name, pe.Path)
	return err
}

// patch rewrites bytes of a real segment file at off.
func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
}

// reseal recomputes the descriptor checksum after a deliberate change, so the next check
// in line is the one that must fail.
func reseal(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := crc32.Checksum(b[:layout.OffChecksum], crc32.MakeTable(crc32.Castagnoli))
	patch(t, path, layout.OffChecksum, binary.LittleEndian.AppendUint32(nil, sum))
}

func TestOpen_ErrNotSegment(t *testing.T) {
	dir := testDir(t)
	path := createClosed(t, dir, "s", spec64K)
	patch(t, path, 0, []byte("NOTSHMQ!"))
	assert.ErrorIs(t, openErr(t, dir, "s"), shm.ErrNotSegment)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "text"), []byte("hello, this is a text file\n"), 0o600))
	assert.ErrorIs(t, openErr(t, dir, "text"), shm.ErrNotSegment)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tiny"), []byte("hi\n"), 0o600))
	assert.ErrorIs(t, openErr(t, dir, "tiny"), shm.ErrNotSegment, "shorter than the magic but not a prefix of it")
}

func TestOpen_ErrVersion(t *testing.T) {
	dir := testDir(t)
	for _, major := range []byte{1, 3} {
		name := fmt.Sprintf("v%d", major)
		path := createClosed(t, dir, name, spec64K)
		patch(t, path, layout.OffVersionMajor, []byte{major, 0})
		reseal(t, path)
		err := openErr(t, dir, name)
		assert.ErrorIs(t, err, shm.ErrVersion)
		assert.Contains(t, err.Error(), fmt.Sprintf("layout %d.0", major))
	}

	// A whole layout-1 file, as released code created it, is refused by its version.
	v1, err := hex.DecodeString(descriptorV1)
	require.NoError(t, err)
	file := make([]byte, 32768+1<<20) // v1 header size plus the descriptor's data size
	copy(file, v1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "layout1"), file, 0o600))
	assert.ErrorIs(t, openErr(t, dir, "layout1"), shm.ErrVersion)

	// A newer minor version of the same major is accepted.
	path := createClosed(t, dir, "minor", spec64K)
	patch(t, path, layout.OffVersionMinor, []byte{7, 0})
	reseal(t, path)
	s, err := shm.Open("minor", shm.Options{Dir: dir})
	require.NoError(t, err)
	assert.EqualValues(t, 7, s.Descriptor().VersionMinor)
	s.Close()
}

func TestOpen_ErrCorrupt(t *testing.T) {
	dir := testDir(t)
	path := createClosed(t, dir, "s", spec64K)
	patch(t, path, layout.OffDataSize+1, []byte{0x55}) // flip a byte, checksum now wrong
	err := openErr(t, dir, "s")
	assert.ErrorIs(t, err, shm.ErrCorrupt)
	assert.Contains(t, err.Error(), "checksum mismatch")
}

// TestOpen_ErrCorruptLayout: a checksum that matches values no valid layout has (a crafted
// file) is refused before anything is mapped or indexed with those values.
func TestOpen_ErrCorruptLayout(t *testing.T) {
	dir := testDir(t)
	for i, c := range []struct {
		off int64
		b   []byte
	}{
		{layout.OffDataSize, binary.LittleEndian.AppendUint64(nil, 3<<20)},       // not a power of two
		{layout.OffDataSize, binary.LittleEndian.AppendUint64(nil, 1<<62)},       // absurdly large
		{layout.OffDataOffset, binary.LittleEndian.AppendUint64(nil, 4096)},      // moved data region
		{layout.OffPeerCount, binary.LittleEndian.AppendUint32(nil, 100000)},     // peer table off the header
		{layout.OffKindHeader, binary.LittleEndian.AppendUint64(nil, 4096)},      // kind header over the peer table
		{layout.OffKindHeaderSize, binary.LittleEndian.AppendUint64(nil, 1<<20)}, // kind header into the data
		{layout.OffHeaderSize, binary.LittleEndian.AppendUint64(nil, 32768)},     // layout 1's header size
	} {
		name := fmt.Sprintf("s%d", i)
		path := createClosed(t, dir, name, spec64K)
		patch(t, path, c.off, c.b)
		reseal(t, path)
		assert.ErrorIs(t, openErr(t, dir, name), shm.ErrCorrupt, "case %d", i)
	}
}

func TestOpen_ErrTruncated(t *testing.T) {
	dir := testDir(t)
	// Shorter than the descriptor says: data region cut.
	path := createClosed(t, dir, "data", spec64K)
	require.NoError(t, os.Truncate(path, layout.DataOffset+1000))
	err := openErr(t, dir, "data")
	assert.ErrorIs(t, err, shm.ErrTruncated)
	assert.Contains(t, err.Error(), "descriptor says")

	// Shorter than the header.
	path = createClosed(t, dir, "header", spec64K)
	require.NoError(t, os.Truncate(path, 200))
	assert.ErrorIs(t, openErr(t, dir, "header"), shm.ErrTruncated)

	// Cut inside the descriptor.
	path = createClosed(t, dir, "desc", spec64K)
	require.NoError(t, os.Truncate(path, 40))
	assert.ErrorIs(t, openErr(t, dir, "desc"), shm.ErrTruncated)

	// Cut inside the magic.
	path = createClosed(t, dir, "magic", spec64K)
	require.NoError(t, os.Truncate(path, 4))
	assert.ErrorIs(t, openErr(t, dir, "magic"), shm.ErrTruncated)

	// Empty.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600))
	assert.ErrorIs(t, openErr(t, dir, "empty"), shm.ErrTruncated)
}

func TestOpen_ErrKind(t *testing.T) {
	dir := testDir(t)
	createClosed(t, dir, "s", spec64K)
	_, err := shm.Open("s", shm.Options{Dir: dir, Kind: otherKind})
	assert.ErrorIs(t, err, shm.ErrKind)
	_, err = shm.Inspect("s", shm.Options{Dir: dir, Kind: otherKind})
	assert.ErrorIs(t, err, shm.ErrKind)

	path := createClosed(t, dir, "zero", spec64K)
	patch(t, path, layout.OffKind, []byte{0, 0, 0, 0})
	reseal(t, path)
	assert.ErrorIs(t, openErr(t, dir, "zero"), shm.ErrKind)

	// A kind shm has no name for is the layer above's business: shm opens it.
	path = createClosed(t, dir, "unknown", spec64K)
	patch(t, path, layout.OffKind, []byte{42, 0, 0, 0})
	reseal(t, path)
	s, err := shm.Open("unknown", shm.Options{Dir: dir})
	require.NoError(t, err)
	assert.Equal(t, "kind(42)", s.Descriptor().Kind.String())
	require.NoError(t, s.Close())
}

func TestOpen_ErrUnsafe(t *testing.T) {
	dir := testDir(t)
	target := createClosed(t, dir, "real", spec64K)

	require.NoError(t, os.Symlink(target, filepath.Join(dir, "link")))
	err := openErr(t, dir, "link")
	assert.ErrorIs(t, err, shm.ErrUnsafe)
	assert.Contains(t, err.Error(), "symlink")

	require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	err = openErr(t, dir, "fifo") // must not hang
	assert.ErrorIs(t, err, shm.ErrUnsafe)
	assert.Contains(t, err.Error(), "FIFO")

	require.NoError(t, os.Mkdir(filepath.Join(dir, "directory"), 0o700))
	err = openErr(t, dir, "directory")
	assert.ErrorIs(t, err, shm.ErrUnsafe)
	assert.Contains(t, err.Error(), "directory")

	require.NoError(t, os.Link(target, filepath.Join(dir, "second-name")))
	err = openErr(t, dir, "second-name")
	assert.ErrorIs(t, err, shm.ErrUnsafe)
	assert.Contains(t, err.Error(), "hard links")
	assert.ErrorIs(t, openErr(t, dir, "real"), shm.ErrUnsafe)
}

func TestOpen_ErrUnsafeOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	dir := testDir(t)
	path := createClosed(t, dir, "theirs", spec64K)
	require.NoError(t, os.Chown(path, 12345, 12345))
	err := openErr(t, dir, "theirs")
	assert.ErrorIs(t, err, shm.ErrUnsafe)
	assert.Contains(t, err.Error(), "uid 12345")

	// Naming the owner as trusted lets it through.
	s, err := shm.Open("theirs", shm.Options{Dir: dir, TrustedOwners: []int{12345}})
	require.NoError(t, err)
	s.Close()
}

func TestOpen_ErrNotExist(t *testing.T) {
	_, err := shm.Open("nothing-here", shm.Options{Dir: testDir(t)})
	assert.ErrorIs(t, err, shm.ErrNotExist)
	assert.ErrorIs(t, err, fs.ErrNotExist)
}
