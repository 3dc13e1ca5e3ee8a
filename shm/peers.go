package shm

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/internal/layout"
)

// Role says what a peer does with a segment. Roles below 128 can also be held exclusively
// with AcquireRole.
type Role uint32

// Roles known to shmq. A ring may define more.
const (
	RoleHandle Role = 1 // a process that has the segment open (Create, Open)
	RoleWriter Role = 2 // a ring writer
	RoleReader Role = 3 // a ring reader
)

// String names the role for people.
func (r Role) String() string {
	switch r {
	case RoleHandle:
		return "handle"
	case RoleWriter:
		return "writer"
	case RoleReader:
		return "reader"
	}
	return fmt.Sprintf("role(%d)", uint32(r))
}

// Peer is one entry of the segment's peer table, held by this process through an OFD lock
// on the entry's first byte. Whoever holds the lock owns the entry; the kernel drops it when
// the process dies, which is how other processes learn that the peer is dead.
//
// A Peer's methods are safe for concurrent use.
type Peer struct {
	seg   *Segment
	index int
	role  Role
	entry []byte // the entry's PeerEntrySize bytes in the mapping
}

// Index is the peer's position in the peer table.
func (p *Peer) Index() int { return p.index }

// Role is the role the peer attached with.
func (p *Peer) Role() Role { return p.role }

// Words returns the PeerUserSize bytes of the entry that belong to the ring using the
// segment (claims, waiting marks, counters). They are zero when the entry is claimed and
// readable by every peer. Valid until the segment is closed.
func (p *Peer) Words() []byte {
	return p.entry[layout.PeerUserOffset:layout.PeerEntrySize:layout.PeerEntrySize]
}

// Detach frees the entry: it marks it free and drops the lock (but see PeerOffClaim in
// internal/layout: an entry with an unfinished claim is left for repair). Detach is
// idempotent.
func (p *Peer) Detach() error {
	s := p.seg
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.owned[p.index] != p {
		return nil
	}
	return s.clearPeerLocked(p)
}

// Attach claims a peer entry for role and returns it. A free entry is taken first; if none
// is left, the entry of a dead peer is reused, unless its claim word is set. It returns ErrPeerTableFull when every entry
// belongs to a live peer, ErrReadOnly on an inspected segment and ErrClosed after Close.
func (s *Segment) Attach(role Role) (*Peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.readOnly {
		return nil, ErrReadOnly
	}
	for _, wantState := range []uint32{layout.PeerFree, layout.PeerAttached} {
		for i := 0; i < layout.PeerCount; i++ {
			if s.owned[i] != nil || atomic.LoadUint32(s.peerState(i)) != wantState {
				continue
			}
			if wantState == layout.PeerAttached && atomic.LoadUint64(layout.Uint64(s.peerEntry(i), layout.PeerOffClaim)) != 0 {
				continue // a dead peer's unfinished claim, for the ring to repair first
			}
			// The lock decides between processes racing for the same entry.
			ok, err := lockByte(s.fd, int64(layout.PeerOffset(i)))
			if err != nil {
				return nil, fmt.Errorf("locking peer entry %d: %w", i, err)
			}
			if ok {
				return s.claimPeer(i, role), nil
			}
		}
	}
	return nil, ErrPeerTableFull
}

// claimPeer fills entry i, whose lock this segment has just taken. The state word is
// stored last: a reader that sees PeerAttached also sees the fields before it (atomic
// stores are sequentially consistent).
func (s *Segment) claimPeer(i int, role Role) *Peer {
	e := s.peerEntry(i)
	atomic.StoreUint32(layout.Uint32(e, layout.PeerOffState), layout.PeerFree)
	clear(e[layout.PeerUserOffset:])
	atomic.StoreUint32(layout.Uint32(e, layout.PeerOffRole), uint32(role))
	atomic.StoreUint32(layout.Uint32(e, layout.PeerOffPID), uint32(os.Getpid()))
	atomic.StoreUint64(layout.Uint64(e, layout.PeerOffStartTicks), selfStartTicks())
	atomic.StoreInt64(layout.Int64(e, layout.PeerOffAttachNano), time.Now().UnixNano())
	atomic.StoreUint32(layout.Uint32(e, layout.PeerOffState), layout.PeerAttached)
	p := &Peer{seg: s, index: i, role: role, entry: e}
	s.owned[i] = p
	return p
}

// clearPeerLocked frees entry p and drops its lock. An entry whose claim word is set is
// left marked attached instead, exactly as if its process had died, so that a live peer
// repairs the unfinished claim (a ring reader closing with a record borrowed).
func (s *Segment) clearPeerLocked(p *Peer) error {
	if atomic.LoadUint64(layout.Uint64(p.entry, layout.PeerOffClaim)) == 0 {
		atomic.StoreUint32(layout.Uint32(p.entry, layout.PeerOffState), layout.PeerFree)
		atomic.StoreUint32(layout.Uint32(p.entry, layout.PeerOffPID), 0)
	}
	delete(s.owned, p.index)
	return unlockByte(s.fd, int64(layout.PeerOffset(p.index)))
}

func (s *Segment) peerEntry(i int) []byte {
	off := layout.PeerOffset(i)
	return s.mem[off : off+layout.PeerEntrySize : off+layout.PeerEntrySize]
}

func (s *Segment) peerState(i int) *uint32 { return layout.Uint32(s.peerEntry(i), layout.PeerOffState) }

// PeerInfo describes one used entry of the peer table. Every field but Index and Alive was
// read from shared memory and is only as trustworthy as the peers.
type PeerInfo struct {
	Index      int
	Role       Role
	PID        int
	StartTicks uint64    // process start time, clock ticks since boot
	Attached   time.Time // when the entry was claimed
	Alive      bool      // the entry's lock is held: the process is running
}

// Peers lists the entries marked attached, alive or dead. A dead entry is one whose process
// died without detaching; it stays listed until its entry is reused.
func (s *Segment) Peers() ([]PeerInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	var out []PeerInfo
	for i := 0; i < layout.PeerCount; i++ {
		e := s.peerEntry(i)
		if atomic.LoadUint32(layout.Uint32(e, layout.PeerOffState)) != layout.PeerAttached {
			continue
		}
		alive, err := s.aliveLocked(i)
		if err != nil {
			return nil, err
		}
		out = append(out, PeerInfo{
			Index:      i,
			Role:       Role(atomic.LoadUint32(layout.Uint32(e, layout.PeerOffRole))),
			PID:        int(atomic.LoadUint32(layout.Uint32(e, layout.PeerOffPID))),
			StartTicks: atomic.LoadUint64(layout.Uint64(e, layout.PeerOffStartTicks)),
			Attached:   time.Unix(0, atomic.LoadInt64(layout.Int64(e, layout.PeerOffAttachNano))),
			Alive:      alive,
		})
	}
	return out, nil
}

// Alive reports whether the peer at index i is held by a running process. A killed process
// reads as dead at once, zombie or not: the kernel drops its locks when it exits.
func (s *Segment) Alive(i int) (bool, error) {
	if i < 0 || i >= layout.PeerCount {
		return false, fmt.Errorf("peer index %d out of range [0, %d)", i, layout.PeerCount)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	return s.aliveLocked(i)
}

func (s *Segment) aliveLocked(i int) (bool, error) {
	if s.owned[i] != nil {
		return true, nil // our own lock does not conflict with itself, so GETLK cannot see it
	}
	return byteLocked(s.fd, int64(layout.PeerOffset(i)))
}

// LivePeers counts the peers that are alive, this process's own included.
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

// RoleLock is an exclusive role held by this process.
type RoleLock struct {
	seg  *Segment
	role Role
}

// AcquireRole takes role exclusively for this segment: no other open segment, in this or
// any other process, can hold it until Release, Close or this process's death. It returns
// ErrBusy if the role is held, ErrReadOnly on an inspected segment, ErrClosed after Close.
func (s *Segment) AcquireRole(role Role) (*RoleLock, error) {
	if role >= layout.MaxRoles {
		return nil, fmt.Errorf("role %d cannot be held exclusively (max %d)", role, layout.MaxRoles-1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
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

// Release gives the role up. It is idempotent.
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

// RoleHeld reports whether any live process holds role exclusively.
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
