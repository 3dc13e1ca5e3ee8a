package shm

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edsrzf/mmap-go"

	"github.com/shmq/shmq/internal/layout"
)

// Segment is a mapped shmq segment file. Create and Open return a writable segment that
// holds a peer entry for as long as it is open; Inspect returns a read-only one that holds
// nothing and changes nothing.
//
// A Segment's methods are safe for concurrent use by multiple goroutines. Memory returned by
// Header and Data is valid until Close.
type Segment struct {
	name     string
	dir      string
	desc     Descriptor // validated once at open; never re-read from the mapping
	stat     fileStat   // of the descriptor at open time
	file     *os.File   // owns fd; closing it drops every OFD lock this segment holds
	fd       int
	mem      mmap.MMap
	readOnly bool

	mu       sync.Mutex
	unpinned sync.Cond // signalled when pins drops to 0 while closing
	closed   bool
	// pins counts outstanding Pin calls and closing is set when Close begins; both are
	// atomics so that a reader's Pin/Unpin per borrow takes no lock. Close sets closing,
	// then waits until pins is 0; a Pin that sees closing backs out. With sequentially
	// consistent atomics either the Pin sees closing or Close sees the pin.
	pins    atomic.Int64
	closing atomic.Bool
	owned   map[int]*Peer // peer entries held through this segment's open file description
	roles   map[Role]bool // exclusive roles held likewise
}

// Pin keeps the mapping alive until the matching Unpin: Close waits for every pin to be
// released before it unmaps. Rings pin while a reader holds borrowed records. It returns
// ErrClosed once Close has begun. Pin and Unpin take no lock.
func (s *Segment) Pin() error {
	s.pins.Add(1)
	if s.closing.Load() {
		s.Unpin()
		return ErrClosed
	}
	return nil
}

// Unpin releases one Pin.
func (s *Segment) Unpin() {
	n := s.pins.Add(-1)
	if n < 0 {
		panic("shm: Unpin without Pin")
	}
	if n == 0 && s.closing.Load() {
		s.mu.Lock() // Close holds mu until it waits, so the broadcast cannot be missed
		s.unpinned.Broadcast()
		s.mu.Unlock()
	}
}

// Create makes a new segment named name in the options' directory, laid out as spec, and
// returns it open and attached (the caller's process is its first peer).
//
// The file is built in full under a temporary dot-name and then renamed into place with
// RENAME_NOREPLACE, so no opener ever sees a half-made segment and the file never has two
// names. Its mode is opts.Mode (0600 by default) whatever the umask. Errors (as *fs.PathError
// wrapping): ErrInvalidName, ErrInvalidSpec, ErrExist if the name is taken, ErrNotSupported,
// and the system's error if space cannot be allocated (ENOSPC on a full tmpfs).
func Create(name string, spec Spec, opts Options) (*Segment, error) {
	s, err := create(name, spec, opts)
	if err != nil {
		return nil, &fs.PathError{Op: "create", Path: name, Err: err}
	}
	return s, nil
}

func create(name string, spec Spec, opts Options) (seg *Segment, err error) {
	if err := checkPlatform(); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if err := spec.validate(); err != nil {
		return nil, err
	}
	mode := opts.Mode
	if mode == 0 {
		mode = 0o600
	}
	if mode&^fs.ModePerm != 0 {
		return nil, fmt.Errorf("%w: mode %v has bits beyond the permissions", ErrInvalidSpec, mode)
	}
	dir := opts.ResolvedDir()
	dirfd, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	defer closeFD(dirfd)

	tmp := fmt.Sprintf("%s%s.%d.%08x", tempPrefix, name, os.Getpid(), rand.Uint32())
	fd, err := createExclusive(dirfd, tmp, mode)
	if err != nil {
		return nil, err
	}
	s := newSegment(name, dir, fd, tmp, false)
	defer func() {
		if err != nil {
			_ = unlinkAt(dirfd, tmp)
			s.release()
		}
	}()
	// Hold the creator's peer entry from the first moment: GC leaves a temporary alone while
	// this lock is held, and the lock moves with the inode when it is renamed.
	if ok, err := lockByte(fd, int64(layout.PeerOffset(0))); !ok || err != nil {
		return nil, fmt.Errorf("locking new segment: %v", err)
	}
	s.desc = newDescriptor(spec, os.Getpid(), time.Now())
	if err := allocate(fd, int64(s.desc.FileSize())); err != nil {
		return nil, fmt.Errorf("allocating %d bytes: %w", s.desc.FileSize(), err)
	}
	if s.stat, err = fstat(fd); err != nil {
		return nil, err
	}
	if s.mem, err = mmap.MapRegion(s.file, int(s.desc.FileSize()), mmap.RDWR, 0, 0); err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	raw, _ := s.desc.MarshalBinary()
	copy(s.mem, raw)
	s.claimPeer(0, RoleHandle)
	if err := renameNoReplace(dirfd, tmp, name); err != nil {
		return nil, err
	}
	return s, nil
}

// Open maps an existing segment for reading and writing and attaches the caller's process as
// a peer. It validates, in this order, each failure with its own error (as *fs.PathError
// wrapping): the name (ErrInvalidName); that the file exists (ErrNotExist); that it is a
// regular file, not a symlink, owned by the caller or a trusted owner, with one link
// (ErrUnsafe); its magic (ErrNotSegment; a file too short to hold it is ErrTruncated); that it
// holds a whole header (ErrTruncated); the major layout version (ErrVersion); the descriptor
// checksum and values (ErrCorrupt); the file length against the descriptor (ErrTruncated);
// the kind (ErrKind); and that a peer entry is free (ErrPeerTableFull).
func Open(name string, opts Options) (*Segment, error) {
	return openSegment("open", name, opts, true)
}

// Inspect maps an existing segment read-only (an O_RDONLY descriptor, PROT_READ) after the
// same validation as Open. Looking changes nothing: no peer entry, no lock, no write. The
// returned segment refuses Attach and AcquireRole with ErrReadOnly.
func Inspect(name string, opts Options) (*Segment, error) {
	return openSegment("inspect", name, opts, false)
}

func openSegment(op, name string, opts Options, writable bool) (*Segment, error) {
	s, err := openValidated(name, opts, writable)
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return s, nil
}

func openValidated(name string, opts Options, writable bool) (seg *Segment, err error) {
	if err := checkPlatform(); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	dir := opts.ResolvedDir()
	dirfd, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	defer closeFD(dirfd)

	// Refuse anything but a regular file before opening it: opening a device or FIFO
	// can have effects of its own.
	lst, isLink, err := lstatAt(dirfd, name)
	if err != nil {
		return nil, err
	}
	if isLink {
		return nil, fmt.Errorf("%w: is a symlink", ErrUnsafe)
	}
	if !lst.regular {
		return nil, fmt.Errorf("%w: is a %s, not a regular file", ErrUnsafe, lst.typ)
	}
	fd, err := openAt(dirfd, name, writable)
	if err != nil {
		return nil, err
	}
	s := newSegment(name, dir, fd, name, !writable)
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	if s.stat, err = fstat(fd); err != nil {
		return nil, err
	}
	if s.stat.dev != lst.dev || s.stat.ino != lst.ino {
		return nil, fmt.Errorf("%w: file was replaced while being opened", ErrUnsafe)
	}
	if err := s.stat.checkTrusted(opts.TrustedOwners); err != nil {
		return nil, err
	}
	if s.desc, err = s.readDescriptor(); err != nil {
		return nil, err
	}
	if opts.Kind != 0 && s.desc.Kind != opts.Kind {
		return nil, fmt.Errorf("%w: segment is %v, wanted %v", ErrKind, s.desc.Kind, opts.Kind)
	}
	prot := mmap.RDONLY
	if writable {
		prot = mmap.RDWR
	}
	if s.mem, err = mmap.MapRegion(s.file, int(s.desc.FileSize()), prot, 0, 0); err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	if writable {
		if _, err := s.Attach(RoleHandle); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func newSegment(name, dir string, fd int, fileName string, readOnly bool) *Segment {
	s := &Segment{name: name, dir: dir, fd: fd, file: os.NewFile(uintptr(fd), fileName), readOnly: readOnly,
		owned: map[int]*Peer{}, roles: map[Role]bool{}}
	s.unpinned.L = &s.mu
	return s
}

// checkTrusted applies the ownership rules of Open: a regular file with one name, owned by
// the caller's effective uid or one of trusted.
func (st fileStat) checkTrusted(trusted []int) error {
	if !st.regular {
		return fmt.Errorf("%w: is a %s, not a regular file", ErrUnsafe, st.typ)
	}
	if st.uid != os.Geteuid() && !slices.Contains(trusted, st.uid) {
		return fmt.Errorf("%w: owned by uid %d, not by uid %d or a trusted owner", ErrUnsafe, st.uid, os.Geteuid())
	}
	if st.nlink != 1 {
		return fmt.Errorf("%w: has %d hard links, a segment has exactly one", ErrUnsafe, st.nlink)
	}
	return nil
}

// readDescriptor reads the descriptor with pread (not through a mapping, so that a short
// file cannot fault) and checks it against the file's length.
func (s *Segment) readDescriptor() (Descriptor, error) {
	n := min(s.stat.size, layout.DescriptorSize)
	b := make([]byte, n)
	if _, err := s.file.ReadAt(b, 0); err != nil {
		return Descriptor{}, fmt.Errorf("reading descriptor: %w", err)
	}
	if len(b) >= len(layout.Magic) && string(b[:len(layout.Magic)]) == layout.Magic && s.stat.size < layout.DataOffset {
		return Descriptor{}, fmt.Errorf("%w: file is %d bytes, shorter than the %d-byte header",
			ErrTruncated, s.stat.size, layout.DataOffset)
	}
	d, err := DecodeDescriptor(b)
	if err != nil {
		return Descriptor{}, err
	}
	if uint64(s.stat.size) < d.FileSize() {
		return Descriptor{}, fmt.Errorf("%w: file is %d bytes, descriptor says %d", ErrTruncated, s.stat.size, d.FileSize())
	}
	return d, nil
}

func checkPlatform() error {
	if !supported || binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return ErrNotSupported
	}
	if layout.DataOffset%os.Getpagesize() != 0 {
		return fmt.Errorf("%w: page size %d does not divide the %d-byte header", ErrNotSupported, os.Getpagesize(), layout.DataOffset)
	}
	return nil
}

// Name is the segment's name.
func (s *Segment) Name() string { return s.name }

// Dir is the directory the segment was opened in.
func (s *Segment) Dir() string { return s.dir }

// Descriptor returns the validated descriptor, a copy made at open time.
func (s *Segment) Descriptor() Descriptor { return s.desc }

// ReadOnly reports whether the segment came from Inspect.
func (s *Segment) ReadOnly() bool { return s.readOnly }

// Mode, UID and GID describe the file as it was when the segment was opened.
func (s *Segment) Mode() fs.FileMode { return s.stat.mode }

// UID is the file owner's user id at open time.
func (s *Segment) UID() int { return s.stat.uid }

// GID is the file's group id at open time.
func (s *Segment) GID() int { return s.stat.gid }

// Header returns the mapped header (descriptor, hot blocks, peer table). Read-only for an
// inspected segment. Valid until Close.
func (s *Segment) Header() []byte { return s.mem[:s.desc.DataOffset:s.desc.DataOffset] }

// Data returns the mapped data region, DataSize bytes starting on a page boundary.
// Valid until Close.
func (s *Segment) Data() []byte { return s.mem[s.desc.DataOffset:s.desc.FileSize():s.desc.FileSize()] }

// Close detaches every peer entry and role this segment holds, unmaps it and closes the file.
// It first waits until every Pin is released (a ring reader's borrowed records), so it blocks
// if the calling goroutine itself still holds a borrow. Memory from Header and Data must not
// be used afterwards. Close is idempotent.
func (s *Segment) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.closing.Store(true)
	for s.pins.Load() > 0 {
		s.unpinned.Wait()
	}
	for _, p := range s.owned {
		s.clearPeerLocked(p)
	}
	return s.release()
}

// release unmaps and closes; closing the descriptor drops every OFD lock it holds.
func (s *Segment) release() error {
	var err error
	if s.mem != nil {
		err = s.mem.Unmap()
		s.mem = nil
	}
	if cerr := s.file.Close(); err == nil {
		err = cerr
	}
	return err
}

// Remove deletes the segment file name from the options' directory. Processes that have it
// mapped keep using it until they close it. It does not check for live peers (shmctl rm does).
func Remove(name string, opts Options) error {
	if err := ValidateName(name); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	return removeAt(opts.ResolvedDir(), name)
}

func removeAt(dir, name string) error {
	dirfd, err := openDir(dir)
	if err != nil {
		return err
	}
	defer closeFD(dirfd)
	if err := unlinkAt(dirfd, name); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	return nil
}

// List returns the sorted names in the options' directory that are valid segment names. It
// does not open them: a name in the list may be a foreign file, which Inspect tells.
func List(opts Options) ([]string, error) {
	names, err := dirNames(opts.ResolvedDir())
	if err != nil {
		return nil, err
	}
	names = slices.DeleteFunc(names, func(n string) bool { return ValidateName(n) != nil })
	slices.Sort(names)
	return names, nil
}

func dirNames(dir string) ([]string, error) {
	if err := checkPlatform(); err != nil {
		return nil, err
	}
	dirfd, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	defer closeFD(dirfd)
	return readDirNames(dirfd)
}

// isTemporary reports whether n names a segment under construction.
func isTemporary(n string) bool { return strings.HasPrefix(n, tempPrefix) }
