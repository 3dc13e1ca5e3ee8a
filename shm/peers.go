package shm

import (
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/internal/layout"
)

// Role names an exclusive role of a segment (a ring's single writer, say). Its values
// belong to the layer above shm; AcquireRole takes roles below MaxRoles.
type Role uint32

// MaxRoles bounds the roles AcquireRole can hold: 0 <= role < MaxRoles.
const MaxRoles = layout.MaxRoles

// String returns "role(N)".
func (r Role) String() string { return fmt.Sprintf("role(%d)", uint32(r)) }

// Peer is the peer-table entry of one open Segment, held through an OFD lock on the entry's
// first byte. Whoever holds the lock owns the entry; the kernel drops it when the process
// dies, which is how other processes learn that the peer is dead. Create and Open claim it;
// Close gives it up.
//
// A Peer's methods are safe for concurrent use by multiple goroutines.
type Peer struct {
	seg   *Segment
	index int
	entry []byte // the entry's PeerEntrySize bytes in the mapping; valid until Close
	// detached is set under seg.mu when Close gives the entry up; SetHold then does nothing.
	detached bool
}

// Index is the entry's position in the peer table.
func (p *Peer) Index() int { return p.index }

// Words returns the PeerUserSize bytes of the entry that belong to the layer above (claims,
// waiting marks, counters). They are zero when the entry is claimed and readable by every
// peer. Valid until the segment is unmapped (see Segment.Close).
func (p *Peer) Words() []byte {
	return p.entry[layout.PeerUserOffset:layout.PeerEntrySize:layout.PeerEntrySize]
}

// SetHold sets or clears the entry's hold flag. While it is set, Close leaves the entry
// marked attached (once the lock is dropped it looks like a dead peer's), and Open never
// reuses the entry after its process died, until a live peer has repaired what it holds and
// called Segment.ClearHold. The layer above sets it while it holds a claim that a live peer
// must repair if this process dies.
//
// SetHold may be called from an OnClose function; after Close has given the entry up, or
// once the file was truncated under the mapping, it does nothing. It takes the segment's mutex, never blocks otherwise.
func (p *Peer) SetHold(on bool) {
	s := p.seg
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.detached {
		return
	}
	var v uint32
	if on {
		v = 1
	}
	var err error // a fault: the file was truncated, and there is no flag left to set
	defer s.catchFault(debug.SetPanicOnFault(true), &err)
	// Pairs with the load in claimEntry (another process deciding whether a dead entry may
	// be reused) and with ClearHold's compare-and-swap: a process that dies after this store
	// leaves the flag visible to both.
	atomic.StoreUint32(layout.Uint32(p.entry, layout.PeerOffHold), v)
}

// claimEntry takes a peer entry for a new handle: a free entry first; if none is left, the
// entry of a dead peer, unless its hold flag is set. It returns ErrPeerTableFull when every
// entry belongs to a live peer or is held. The caller holds s.mu or is the only goroutine
// that knows s.
func (s *Segment) claimEntry() (_ *Peer, err error) {
	defer s.catchFault(debug.SetPanicOnFault(true), &err)
	for _, wantState := range []uint32{layout.PeerFree, layout.PeerAttached} {
		for i := 0; i < layout.PeerCount; i++ {
			e := s.peerEntry(i)
			// Pairs with claimPeer's final store of the state: a hint only, the lock decides.
			if atomic.LoadUint32(layout.Uint32(e, layout.PeerOffState)) != wantState {
				continue
			}
			hold := layout.Uint32(e, layout.PeerOffHold)
			if atomic.LoadUint32(hold) != 0 { // pairs with SetHold's store
				continue // a dead (or live) peer's unfinished work, for the layer above to repair
			}
			// The lock decides between processes racing for the same entry.
			ok, err := lockByte(s.fd, int64(layout.PeerOffset(i)))
			if err != nil {
				return nil, fmt.Errorf("locking peer entry %d: %w", i, err)
			}
			if !ok {
				continue
			}
			// The owner may have set its hold between our check and its death; now that
			// we hold the lock nobody can set it any more, so this load is final.
			if atomic.LoadUint32(hold) != 0 {
				_ = unlockByte(s.fd, int64(layout.PeerOffset(i)))
				continue
			}
			return s.claimPeer(i), nil
		}
	}
	return nil, ErrPeerTableFull
}

// claimPeer fills entry i, whose lock this segment has just taken. The state word is
// stored last: a peer that loads PeerAttached (sequentially consistent atomics) also sees
// the fields stored before it.
func (s *Segment) claimPeer(i int) *Peer {
	e := s.peerEntry(i)
	atomic.StoreUint32(layout.Uint32(e, layout.PeerOffState), layout.PeerFree)
	clear(e[layout.PeerUserOffset:])
	atomic.StoreUint32(layout.Uint32(e, layout.PeerOffHold), 0)
	atomic.StoreUint32(layout.Uint32(e, layout.PeerOffPID), uint32(os.Getpid()))
	atomic.StoreUint64(layout.Uint64(e, layout.PeerOffStartTicks), selfStartTicks())
	atomic.StoreInt64(layout.Int64(e, layout.PeerOffAttachNano), time.Now().UnixNano())
	atomic.StoreUint32(layout.Uint32(e, layout.PeerOffState), layout.PeerAttached)
	p := &Peer{seg: s, index: i, entry: e}
	s.peer = p
	return p
}

// detachPeerLocked gives the handle's entry up: marks it free unless its hold flag is set
// (then it stays attached, exactly as if the process had died, for a live peer to repair),
// and drops its lock. s.mu is held.
func (s *Segment) detachPeerLocked() error {
	p := s.peer
	if p == nil || p.detached {
		return nil
	}
	p.detached = true
	if err := s.freeEntry(p); err != nil {
		_ = unlockByte(s.fd, int64(layout.PeerOffset(p.index)))
		return err // truncated: the entry is gone with the file
	}
	return unlockByte(s.fd, int64(layout.PeerOffset(p.index)))
}

// freeEntry marks p's entry free unless its hold flag is set; a fault (the file was
// truncated) is an error.
func (s *Segment) freeEntry(p *Peer) (err error) {
	defer s.catchFault(debug.SetPanicOnFault(true), &err)
	// SetHold cannot run concurrently (it takes s.mu and now sees detached), so this load
	// is the last word on the flag.
	if atomic.LoadUint32(layout.Uint32(p.entry, layout.PeerOffHold)) == 0 {
		atomic.StoreUint32(layout.Uint32(p.entry, layout.PeerOffState), layout.PeerFree) // pairs with claimEntry's load
		atomic.StoreUint32(layout.Uint32(p.entry, layout.PeerOffPID), 0)
	}
	return nil
}

func (s *Segment) peerEntry(i int) []byte {
	off := layout.PeerOffset(i)
	return s.mem[off : off+layout.PeerEntrySize : off+layout.PeerEntrySize]
}

func checkPeerIndex(i int) error {
	if i < 0 || i >= layout.PeerCount {
		return fmt.Errorf("peer index %d out of range [0, %d)", i, layout.PeerCount)
	}
	return nil
}

// PeerWords returns the user words (PeerUserSize bytes) of entry i, whoever owns it, so
// that the layer above can repair what a dead peer left. Valid until the segment is
// unmapped; on an inspected segment the memory is read-only (writing it faults). It returns
// an error for an index out of range and ErrClosed after Close.
func (s *Segment) PeerWords(i int) ([]byte, error) {
	if err := checkPeerIndex(i); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	return s.peerEntry(i)[layout.PeerUserOffset:layout.PeerEntrySize:layout.PeerEntrySize], nil
}

// ClearHold clears entry i's hold flag if the entry's process is dead, and reports whether
// this call cleared it: the flag is cleared with a compare-and-swap from 1 to 0, so of
// several repairers exactly one wins. A live entry's flag (this handle's own included) is
// never cleared: ClearHold returns false. Errors: index out of range, ErrReadOnly on an
// inspected segment, ErrClosed after Close, ErrTruncated (the file was truncated under the
// mapping).
func (s *Segment) ClearHold(i int) (cleared bool, err error) {
	if err := checkPeerIndex(i); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	if s.readOnly {
		return false, ErrReadOnly
	}
	alive, err := s.aliveLocked(i)
	if err != nil || alive {
		return false, err
	}
	defer s.catchFault(debug.SetPanicOnFault(true), &err)
	// A dead entry with its hold set is never reused (claimEntry), so it stays dead until
	// this swap; pairs with SetHold's store by the late owner and with other repairers.
	return atomic.CompareAndSwapUint32(layout.Uint32(s.peerEntry(i), layout.PeerOffHold), 1, 0), nil
}

// PeerInfo describes one used entry of the peer table. Every field but Index and Alive was
// read from shared memory and is only as trustworthy as the peers.
type PeerInfo struct {
	Index      int
	PID        int
	StartTicks uint64    // process start time, clock ticks since boot
	Attached   time.Time // when the entry was claimed
	Alive      bool      // the entry's lock is held: the process is running
	Hold       bool      // the hold flag is set (see Peer.SetHold)
}

// Peers lists the entries marked attached, alive or dead. A dead entry is one whose process
// died (or closed with its hold set) without detaching; it stays listed until its entry is
// reused. It returns ErrClosed after Close, and an error wrapping ErrTruncated if the file
// was truncated under the mapping; it may be called from an OnClose function.
func (s *Segment) Peers() (out []PeerInfo, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	defer s.catchFault(debug.SetPanicOnFault(true), &err)
	for i := 0; i < layout.PeerCount; i++ {
		e := s.peerEntry(i)
		// Pairs with claimPeer's last store: the fields below were stored before it.
		if atomic.LoadUint32(layout.Uint32(e, layout.PeerOffState)) != layout.PeerAttached {
			continue
		}
		alive, err := s.aliveLocked(i)
		if err != nil {
			return nil, err
		}
		out = append(out, PeerInfo{
			Index:      i,
			PID:        int(atomic.LoadUint32(layout.Uint32(e, layout.PeerOffPID))),
			StartTicks: atomic.LoadUint64(layout.Uint64(e, layout.PeerOffStartTicks)),
			Attached:   time.Unix(0, atomic.LoadInt64(layout.Int64(e, layout.PeerOffAttachNano))),
			Alive:      alive,
			Hold:       atomic.LoadUint32(layout.Uint32(e, layout.PeerOffHold)) != 0,
		})
	}
	return out, nil
}

// Alive reports whether the entry at index i is held by a running process. A killed process
// reads as dead at once, zombie or not: the kernel drops its locks when it exits. It returns
// an error for an index out of range and ErrClosed after Close.
func (s *Segment) Alive(i int) (bool, error) {
	if err := checkPeerIndex(i); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	return s.aliveLocked(i)
}

func (s *Segment) aliveLocked(i int) (bool, error) {
	if s.peer != nil && s.peer.index == i && !s.peer.detached {
		return true, nil // our own lock does not conflict with itself, so GETLK cannot see it
	}
	return byteLocked(s.fd, int64(layout.PeerOffset(i)))
}

// LivePeers counts the peers that are alive, this handle included. Errors as Peers.
func (s *Segment) LivePeers() (int, error) {
	peers, err := s.Peers()
	n := 0
	for _, p := range peers {
		if p.Alive {
			n++
		}
	}
	return n, err
}

// RoleLock is an exclusive role held through one open Segment.
type RoleLock struct {
	seg  *Segment
	role Role
}

// AcquireRole takes role exclusively: no other open Segment, in this or any other process,
// can hold it until Release, Close or this process's death. It never blocks. Errors: role
// not below MaxRoles, ErrBusy if the role is held, ErrReadOnly on an inspected segment,
// ErrClosed once Close has begun.
func (s *Segment) AcquireRole(role Role) (*RoleLock, error) {
	if role >= layout.MaxRoles {
		return nil, fmt.Errorf("%v cannot be held exclusively (max %d)", role, layout.MaxRoles-1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeStarted {
		return nil, ErrClosed
	}
	if s.readOnly {
		return nil, ErrReadOnly
	}
	if s.roles[role] {
		return nil, fmt.Errorf("%w: %v is already held through this segment", ErrBusy, role)
	}
	ok, err := lockByte(s.fd, int64(layout.RoleLockOffset+int(role)))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: %v", ErrBusy, role)
	}
	s.roles[role] = true
	return &RoleLock{seg: s, role: role}, nil
}

// Release gives the role up. It is idempotent, may be called from an OnClose function, and
// after Close does nothing (Close released the role).
func (l *RoleLock) Release() error {
	s := l.seg
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.roles[l.role] {
		return nil
	}
	delete(s.roles, l.role)
	return unlockByte(s.fd, int64(layout.RoleLockOffset+int(l.role)))
}

// RoleHeld reports whether any live process holds role exclusively (false for a role not
// below MaxRoles). It returns ErrClosed after Close.
func (s *Segment) RoleHeld(role Role) (bool, error) {
	if role >= layout.MaxRoles {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	if s.roles[role] {
		return true, nil
	}
	return byteLocked(s.fd, int64(layout.RoleLockOffset+int(role)))
}

var selfStartTicks = sync.OnceValue(func() uint64 {
	t, _ := processStartTicks(os.Getpid())
	return t
})
