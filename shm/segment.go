package shm

import (
	"context"
	"encoding/binary"
	"errors"
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

// CloseWait is how long Close waits for outstanding pins before it gives up with
// ErrBorrowed and leaves the unmapping to the last Unpin.
const CloseWait = 200 * time.Millisecond

// Segment is a mapped shmq segment file. Create and Open return a writable segment that
// holds one peer entry (Peer) for as long as it is open; Inspect returns a read-only one
// that holds nothing and changes nothing.
//
// A Segment's methods are safe for concurrent use by multiple goroutines. Memory returned by
// Header, Data, Peer.Words and PeerWords is valid until the segment is unmapped: at the end
// of Close, or at the last Unpin if Close returned ErrBorrowed.
type Segment struct {
	name     string
	dir      string
	desc     Descriptor // validated once at open; never re-read from the mapping
	stat     fileStat   // of the descriptor at open time; dev/ino identify the file for Remove
	file     *os.File   // owns fd; closing it drops every OFD lock this segment holds
	fd       int
	readOnly bool
	header   []byte // the mapping's header, data region; fixed at open, valid until unmapped
	data     []byte
	// removeOnClose is Options.RemoveOnClose.
	removeOnClose bool

	// pins counts outstanding Pin calls and closing is set when Close begins; both are
	// atomics so that a reader's Pin/Unpin per borrow takes no lock. Pin adds to pins, then
	// loads closing; Close stores closing, then (after the OnClose functions) loads pins.
	// With sequentially consistent atomics either the Pin sees closing and backs out, or
	// Close sees the pin and waits for it.
	pins    atomic.Int64
	closing atomic.Bool

	mu       sync.Mutex
	unpinned sync.Cond // on mu; broadcast when pins drops to 0 while closing, and at CloseWait
	mem      mmap.MMap // nil once unmapped; set to nil only under mu
	peer     *Peer     // the handle's entry; nil for Inspect
	roles    map[Role]bool
	hooks    []*closeHook // OnClose functions not yet run, in registration order
	// closeStarted is set by the first Close; closed once the OnClose functions have run,
	// after which every method but Pin, Unpin, Close and the accessors returns ErrClosed.
	closeStarted bool
	closed       bool
	unmapOnUnpin bool // Close gave up on the pins: the Unpin that brings them to 0 unmaps

	closeDone chan struct{} // closed when the first Close has finished
	closeErr  error         // the first Close's result; written before closeDone is closed
}

type closeHook struct {
	fn   func()
	done bool // run or removed; under Segment.mu
}

// Pin keeps the mapping alive until the matching Unpin: Close waits up to CloseWait for
// every pin, and if pins remain it leaves the unmapping to the last Unpin. Rings pin while a
// reader holds borrowed records. Pin returns ErrClosed once Close has begun. Pin and Unpin
// take no lock on their fast path and never block.
func (s *Segment) Pin() error {
	s.pins.Add(1)
	if s.closing.Load() { // pairs with Close's store; see the pins field
		s.Unpin()
		return ErrClosed
	}
	return nil
}

// Unpin releases one Pin. It panics without a matching Pin. If Close is waiting for pins,
// the last Unpin wakes it; if Close has already given up (ErrBorrowed), the last Unpin
// unmaps the segment.
func (s *Segment) Unpin() {
	n := s.pins.Add(-1)
	if n < 0 {
		panic("shm: Unpin without Pin")
	}
	if n == 0 && s.closing.Load() {
		s.mu.Lock() // Close reads pins under mu, so its decision and ours cannot cross
		s.unpinned.Broadcast()
		if s.unmapOnUnpin && s.pins.Load() == 0 {
			s.unmapOnUnpin = false
			_ = s.unmapLocked()
		}
		s.mu.Unlock()
	}
}

// Create makes a new segment named name in the options' directory, laid out as spec, and
// returns it open, holding peer entry 0. The kind header and the data region are zero.
//
// The file is built in full under a temporary dot-name and then renamed into place with
// RENAME_NOREPLACE, so no opener ever sees a half-made segment and the file never has two
// names. Its mode is opts.Mode (0600 by default) whatever the umask. Errors (as *fs.PathError
// wrapping): ErrInvalidName, ErrInvalidSpec (kind 0, a bad data size), ErrExist if the name
// is taken, ErrNotSupported, and the system's error if space cannot be allocated (ENOSPC on
// a full tmpfs). opts.Kind is not consulted.
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
	s := newSegment(name, dir, fd, tmp, false, opts)
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
	if s.stat, err = fstat(fd); err != nil { // dev and ino identify the file for Remove
		return nil, err
	}
	if s.mem, err = mmap.MapRegion(s.file, int(s.desc.FileSize()), mmap.RDWR, 0, 0); err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	s.setMapped()
	raw, _ := s.desc.MarshalBinary()
	copy(s.mem, raw)
	s.claimPeer(0)
	if err := renameNoReplace(dirfd, tmp, name); err != nil {
		return nil, err
	}
	return s, nil
}

// Open maps an existing segment for reading and writing and claims a peer entry for the
// returned handle (Peer): a free one, else a dead peer's whose hold flag is clear. It validates, in this order, each failure with its own error (as *fs.PathError
// wrapping): the name (ErrInvalidName); that the file exists (ErrNotExist); that it is a
// regular file, not a symlink, owned by the caller or a trusted owner, with one link
// (ErrUnsafe); its magic (ErrNotSegment; a file too short to hold it is ErrTruncated); that it
// holds a whole header (ErrTruncated); the major layout version (ErrVersion); the descriptor
// checksum and values (ErrCorrupt); the file length against the descriptor (ErrTruncated);
// opts.Kind when it is not 0 (ErrKind); and that a peer entry is free (ErrPeerTableFull).
// It does not wait: see WaitOpen for a segment that may not exist yet.
func Open(name string, opts Options) (*Segment, error) {
	return openSegment("open", name, opts, true)
}

// Inspect maps an existing segment read-only (an O_RDONLY descriptor, PROT_READ) after the
// same validation as Open (less the peer entry). Looking changes nothing: no peer entry, no
// lock, no write. The returned segment has no Peer and refuses AcquireRole and ClearHold
// with ErrReadOnly.
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
	s := newSegment(name, dir, fd, name, !writable, opts)
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
	s.setMapped()
	if writable {
		if _, err := s.claimEntry(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// setMapped fixes the slices Header and Data return, once, before s is shared.
func (s *Segment) setMapped() {
	size := s.desc.FileSize()
	s.header = s.mem[:s.desc.DataOffset:s.desc.DataOffset]
	s.data = s.mem[s.desc.DataOffset:size:size]
}

func newSegment(name, dir string, fd int, fileName string, readOnly bool, opts Options) *Segment {
	s := &Segment{name: name, dir: dir, fd: fd, file: os.NewFile(uintptr(fd), fileName), readOnly: readOnly,
		removeOnClose: opts.RemoveOnClose, roles: map[Role]bool{}, closeDone: make(chan struct{})}
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

// Header returns the mapped header: descriptor, peer table and the kind header at
// Descriptor().KindHeaderOffset. Read-only for an inspected segment. Valid until the segment
// is unmapped (see Close); the call itself never fails.
func (s *Segment) Header() []byte { return s.header }

// Data returns the mapped data region, DataSize bytes starting on a page boundary. Valid
// until the segment is unmapped (see Close); the call itself never fails.
func (s *Segment) Data() []byte { return s.data }

// Peer returns the handle's peer entry, claimed by Create or Open, or nil for a segment
// from Inspect. There is exactly one per open handle, whatever the layer above does with it.
func (s *Segment) Peer() *Peer { return s.peer }

// OnClose registers fn to run when Close begins: after Pin has started to fail, before
// anything is detached or unmapped, and outside the segment's mutex, so fn may call other
// methods of the segment (RoleLock.Release, Peer.SetHold, Peers, ...), which work until
// every fn has returned. fn must not call Close itself: Close waits for the first Close,
// which waits for fn. Close runs every registered fn once, one at a time, in reverse order
// of registration, on the goroutine of the first Close. A ring endpoint registers its Close
// here so that closing the segment under a blocked call wakes the call and waits for it.
//
// remove unregisters fn; it is idempotent and safe to call at any time, from inside fn and
// after Close included. If Close has already begun when OnClose is called, fn is run by that
// Close if it has not yet finished running functions, and otherwise at once on a new
// goroutine (as context.AfterFunc does for a done context); in that last case nothing orders
// fn before the unmapping.
func (s *Segment) OnClose(fn func()) (remove func()) {
	h := &closeHook{fn: fn}
	s.mu.Lock()
	if s.closed {
		h.done = true
		s.mu.Unlock()
		go fn()
		return func() {}
	}
	s.hooks = append(s.hooks, h)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		h.done = true
		if i := slices.Index(s.hooks, h); i >= 0 {
			s.hooks = slices.Delete(s.hooks, i, i+1)
		}
	}
}

// Close gives the segment up. It is safe to call from any number of goroutines at once: the
// first call does the work, and every other call (then or later) waits until it has finished
// and returns the same error. The first call:
//
//  1. marks the segment closing: Pin fails with ErrClosed from now on;
//  2. runs the OnClose functions, outside the mutex, in reverse order of registration;
//  3. waits for outstanding pins, at most CloseWait;
//  4. gives up the peer entry (left marked attached if its hold flag is set, see
//     Peer.SetHold) and the roles, removes the name if Options.RemoveOnClose (a name that is
//     gone already is not an error), and closes the file, which drops every lock;
//  5. unmaps, unless pins are still held: then it returns ErrBorrowed and the mapping stays
//     valid until the last Unpin, which unmaps.
//
// Close never waits longer than CloseWait for pins (an OnClose function that blocks blocks
// it, though), and nothing is unmapped while a pin is held. If another process truncated
// the file, Close still does all of the above and returns an error wrapping ErrTruncated
// (the peer entry went with the file). Memory from Header, Data and
// Peer.Words must not be used once the segment is unmapped.
func (s *Segment) Close() error {
	s.mu.Lock()
	if s.closeStarted {
		s.mu.Unlock()
		<-s.closeDone // closed after closeErr is written
		return s.closeErr
	}
	s.closeStarted = true
	s.closing.Store(true) // pairs with Pin's load; see the pins field
	s.mu.Unlock()

	s.runHooks()

	s.mu.Lock()
	s.closed = true
	err := s.waitPinsLocked()
	if derr := s.detachPeerLocked(); err == nil {
		err = derr
	}
	clear(s.roles) // closing the file below drops their locks
	if s.removeOnClose {
		if rerr := s.removeLocked(); err == nil && !errors.Is(rerr, ErrNotExist) {
			err = rerr
		}
	}
	if cerr := s.file.Close(); err == nil {
		err = cerr
	}
	if s.pins.Load() > 0 { // pins read under mu: see Unpin
		s.unmapOnUnpin = true
		err = fmt.Errorf("%w: %d pins still held after %v", ErrBorrowed, s.pins.Load(), CloseWait)
	} else if uerr := s.unmapLocked(); err == nil {
		err = uerr
	}
	s.mu.Unlock()
	if err != nil {
		err = &fs.PathError{Op: "close", Path: s.name, Err: err}
	}
	s.closeErr = err
	close(s.closeDone)
	return err
}

// runHooks runs the OnClose functions, last registered first, each outside the mutex. A
// function registered or removed meanwhile (by another function, say) is taken into account.
func (s *Segment) runHooks() {
	for {
		s.mu.Lock()
		var h *closeHook
		if n := len(s.hooks); n > 0 {
			h = s.hooks[n-1]
			s.hooks = s.hooks[:n-1]
			h.done = true
		}
		s.mu.Unlock()
		if h == nil {
			return
		}
		h.fn()
	}
}

// waitPinsLocked waits with s.mu held (released while waiting) until no pin is held or
// CloseWait has passed.
func (s *Segment) waitPinsLocked() error {
	if s.pins.Load() == 0 {
		return nil
	}
	deadline := time.Now().Add(CloseWait)
	timer := time.AfterFunc(CloseWait, func() {
		s.mu.Lock() // taken after Wait released it, so the broadcast is not lost
		s.unpinned.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	for s.pins.Load() > 0 && time.Now().Before(deadline) {
		s.unpinned.Wait()
	}
	return nil
}

// unmapLocked unmaps once; s.mu is held (or s is not shared yet).
func (s *Segment) unmapLocked() error {
	if s.mem == nil {
		return nil
	}
	err := s.mem.Unmap()
	s.mem = nil
	return err
}

// release unmaps and closes a segment that never left create or open; closing the
// descriptor drops every OFD lock it holds.
func (s *Segment) release() error {
	err := s.unmapLocked()
	if cerr := s.file.Close(); err == nil {
		err = cerr
	}
	return err
}

// Remove deletes the segment's name now, if the name still refers to this handle's file
// (same device and inode): it never removes a successor that took the name after this
// file was removed. Processes that have the file mapped keep using it until they close it.
// Errors (as *fs.PathError): ErrNotExist if the name is gone or refers to another file,
// ErrClosed after Close (the file must be held open, or its inode number could have been
// reused by a successor). Remove works on an inspected segment too: it changes the
// directory, not the file.
//
// Nobody removes a segment implicitly; see the package documentation.
func (s *Segment) Remove() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return &fs.PathError{Op: "remove", Path: s.name, Err: ErrClosed}
	}
	return s.removeLocked()
}

// removeLocked unlinks the name if it still refers to s's file. Between the check and the
// unlink another process would have to remove the name and create a successor under it;
// Linux offers no unlink-if-inode, so that window (microseconds) remains.
func (s *Segment) removeLocked() error {
	pathErr := func(err error) error { return &fs.PathError{Op: "remove", Path: s.name, Err: err} }
	dirfd, err := openDir(s.dir)
	if err != nil {
		return err
	}
	defer closeFD(dirfd)
	st, _, err := lstatAt(dirfd, s.name)
	if err != nil {
		return pathErr(err)
	}
	if st.dev != s.stat.dev || st.ino != s.stat.ino {
		return pathErr(fmt.Errorf("%w: the name now refers to another file", ErrNotExist))
	}
	if err := unlinkAt(dirfd, s.name); err != nil {
		return pathErr(err)
	}
	return nil
}

// Remove deletes the segment file name from the options' directory, whatever file it
// refers to. Processes that have it mapped keep using it until they close it. It does not
// check for live peers (shmctl rm does). A handle that should remove its own segment uses
// Segment.Remove or Options.RemoveOnClose, which never remove a successor.
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

// openOrCreateTries bounds how often OpenOrCreate starts over when the segment it failed to
// create is removed before it could open it.
const openOrCreateTries = 8

// OpenOrCreate creates the segment name laid out as spec, or opens it if it exists; created
// says whether this call created it. An existing segment whose kind, data size or params
// differ from spec is refused with ErrMismatch, whose message names both values. Races are
// handled: losing the creation to another process (ErrExist) opens the winner's segment,
// and if that is removed before it is opened, OpenOrCreate starts over (a few times, then it
// returns ErrNotExist). Errors are those of Create and Open, as *fs.PathError;
// ErrInvalidSpec also when opts.Kind is set and differs from spec.Kind.
func OpenOrCreate(name string, spec Spec, opts Options) (seg *Segment, created bool, err error) {
	if err := spec.validate(); err != nil {
		return nil, false, &fs.PathError{Op: "create", Path: name, Err: err}
	}
	if opts.Kind != 0 && opts.Kind != spec.Kind {
		return nil, false, &fs.PathError{Op: "create", Path: name,
			Err: fmt.Errorf("%w: Options.Kind %v differs from Spec.Kind %v", ErrInvalidSpec, opts.Kind, spec.Kind)}
	}
	for range openOrCreateTries {
		s, err := Create(name, spec, opts)
		if err == nil {
			return s, true, nil
		}
		if !errors.Is(err, ErrExist) {
			return nil, false, err
		}
		s, err = Open(name, opts)
		if errors.Is(err, ErrNotExist) {
			continue // removed between our Create and our Open
		}
		if err != nil {
			return nil, false, err
		}
		if merr := spec.mismatch(s.desc); merr != nil {
			s.Close()
			return nil, false, &fs.PathError{Op: "open", Path: name, Err: merr}
		}
		return s, false, nil
	}
	return nil, false, &fs.PathError{Op: "open", Path: name,
		Err: fmt.Errorf("%w: removed and re-created %d times while opening", ErrNotExist, openOrCreateTries)}
}

// mismatch returns an error wrapping ErrMismatch if d was not laid out from spec.
func (spec Spec) mismatch(d Descriptor) error {
	switch {
	case d.Kind != spec.Kind:
		return fmt.Errorf("%w: kind is %v, wanted %v", ErrMismatch, d.Kind, spec.Kind)
	case d.DataSize != spec.DataSize:
		return fmt.Errorf("%w: data size is %d, wanted %d", ErrMismatch, d.DataSize, spec.DataSize)
	case d.Params != spec.Params:
		return fmt.Errorf("%w: params are %v, wanted %v", ErrMismatch, d.Params, spec.Params)
	}
	return nil
}

// WaitOpen is Open that waits while the name does not exist yet: it retries every
// millisecond at first, doubling the pause up to 50 ms, until the segment can be opened or
// ctx is done. Then it returns an error that is errors.Is both ErrNotExist and ctx.Err()
// (as *fs.PathError). Any other error of Open returns at once. Like Open, it tries once
// even if ctx is already done, so an existing segment is opened.
func WaitOpen(ctx context.Context, name string, opts Options) (*Segment, error) {
	const maxPause = 50 * time.Millisecond
	pause := time.Millisecond
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s, err := Open(name, opts)
		if err == nil || !errors.Is(err, ErrNotExist) {
			return s, err
		}
		if ctx.Err() != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w while waiting for it: %w", ErrNotExist, ctx.Err())}
		}
		if timer == nil {
			timer = time.NewTimer(pause)
		} else {
			timer.Reset(pause)
		}
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		pause = min(2*pause, maxPause)
	}
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
