package ring

import (
	"fmt"
	"sync/atomic"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// A cell is one claim cell of the kind header (see format.go), held by one MPMC endpoint.
// Only the cell's owner writes its claim and role; a repairer writes them only once it has
// taken the cell over (takeOver), so that it is the owner.
type cell struct {
	claim *uint64 // lowest position claimed + 1, 0 when none
	owner *uint32 // the owner word (format.go): CAS by whoever takes the cell
	role  *uint32 // role | claim flags
}

// ownerIndex is the peer-table index an owner word names, -1 for a free cell.
func ownerIndex(o uint32) int { return int(o&cellIndexMask) - 1 }

// newOwner is the owner word of peer entry index me taking a cell whose owner word was o:
// the next generation.
func newOwner(o uint32, me int) uint32 {
	return (o+1<<cellGenShift)&cellGenMask | uint32(me+1)
}

// freeOwner is the owner word of the cell whose owner word was o, freed: no owner, the
// same generation.
func freeOwner(o uint32) uint32 { return o & cellGenMask }

// isFree reports whether owner word o is a free cell's.
func isFree(o uint32) bool { return o&^cellGenMask == 0 }

// setFlags sets the claim flags of the cell, keeping its role. Only the holder calls it.
func (c cell) setFlags(f uint32) {
	atomic.StoreUint32(c.role, atomic.LoadUint32(c.role)&cellRoleMask|f)
}

func (e *endpoint) cellAt(i int) cell {
	off := cellOffset(i)
	return cell{claim: e.u64(off + cellClaim), owner: e.u32(off + cellOwner), role: e.u32(off + cellRole)}
}

// takeCell claims a free cell for this endpoint. The process's hold flag is set before the
// cell names the process's peer entry, so that if the process dies the entry is not reused
// while a cell still names it. It returns an error wrapping shm.ErrPeerTableFull when every
// cell is taken.
func (e *endpoint) takeCell(role uint32) (cell, error) {
	l := e.loc
	l.mu.Lock()
	if l.cells++; l.cells == 1 {
		l.peer.SetHold(true)
	}
	l.mu.Unlock()
	me := l.peer.Index()
	for i := 0; i < numCells; i++ {
		c := e.cellAt(i)
		o := atomic.LoadUint32(c.owner)
		if !isFree(o) || !atomic.CompareAndSwapUint32(c.owner, o, newOwner(o, me)) {
			continue
		}
		atomic.StoreUint64(c.claim, 0)
		atomic.StoreUint32(c.role, role)
		return c, nil
	}
	e.putCellCount()
	return cell{}, fmt.Errorf("%w: all %d claim cells of ring %s are taken", shm.ErrPeerTableFull, numCells, e.seg.Name())
}

// dropCell gives the endpoint's cell back. A cell with a claim outstanding (a reader that
// closes with a record borrowed) is orphaned instead: a live reader repairs it as if its
// owner had died, and frees it.
func (e *endpoint) dropCell(c cell) {
	if atomic.LoadUint64(c.claim) != 0 {
		atomic.OrUint32(c.owner, cellOrphan)
	} else {
		atomic.StoreUint32(c.owner, freeOwner(atomic.LoadUint32(c.owner))) // we own it: nobody else writes it
	}
	e.putCellCount()
}

func (e *endpoint) putCellCount() {
	l := e.loc
	l.mu.Lock()
	if l.cells--; l.cells == 0 {
		l.peer.SetHold(false)
	}
	l.mu.Unlock()
}

// deadCell is a cell whose owner died (or orphaned it), as found by scanCells.
type deadCell struct {
	cell
	owner uint32 // the owner word as loaded
	claim uint64 // the claim as loaded
	role  uint32 // the role as loaded, after the claim
	flags uint32 // the claim flags as loaded, after the claim
}

// takeOver makes this process the owner of the dead (or orphaned) cell d with a CAS of its
// owner word from the value scanCells loaded, and reports whether it did. Of repairers
// racing for a cell one wins. The CAS also fails when the cell changed hands since it was
// listed (another repairer dealt with it and freed it, and a new endpoint took it): every
// new owner bumps the generation, so a repairer acting on a stale listing never clears a
// live endpoint's claim or frees its cell. The winner owns the cell as if it had taken it:
// d's claim and flags are loaded again (nobody can change them now) and the winner gives the
// cell back with freeTaken.
func (e *endpoint) takeOver(d *deadCell) bool {
	o := newOwner(d.owner, e.loc.peer.Index())
	if !atomic.CompareAndSwapUint32(d.cell.owner, d.owner, o) {
		return false
	}
	d.owner = o
	d.claim = atomic.LoadUint64(d.cell.claim)
	rf := atomic.LoadUint32(d.cell.role)
	d.role, d.flags = rf&cellRoleMask, rf&^cellRoleMask
	return true
}

// freeTaken frees a cell this process took over: its claim first, then the owner word.
func freeTaken(d deadCell) {
	atomic.StoreUint64(d.cell.claim, 0)
	atomic.StoreUint32(d.cell.role, 0)
	atomic.StoreUint32(d.cell.owner, freeOwner(d.owner))
}

// scanCells returns the cells whose owner is dead or orphaned them, and reports for each
// live cell of role its claim and flags to fn, except the cell whose claim word is skip.
// Slow path: one liveness check per owning process.
func (e *endpoint) scanCells(role uint32, live func(claim uint64, flags uint32), skip *uint64) []deadCell {
	var dead []deadCell
	alive := map[int]bool{}
	for i := 0; i < numCells; i++ {
		c := e.cellAt(i)
		o := atomic.LoadUint32(c.owner)
		if isFree(o) {
			continue
		}
		isAlive := false
		if idx := ownerIndex(o); o&cellOrphan == 0 && idx >= 0 && idx < layout.PeerCount {
			a, seen := alive[idx]
			if !seen {
				a, _ = e.seg.Alive(idx)
				alive[idx] = a
			}
			isAlive = a
		}
		claim := atomic.LoadUint64(c.claim)
		rf := atomic.LoadUint32(c.role) // after the claim: see the claim flags in format.go
		if isAlive {
			if rf&cellRoleMask == role && claim != 0 && c.claim != skip {
				live(claim, rf&^cellRoleMask)
			}
			continue
		}
		dead = append(dead, deadCell{cell: c, owner: o, claim: claim, role: rf & cellRoleMask, flags: rf &^ cellRoleMask})
	}
	return dead
}

// freeDeadCells frees the dead cells with no claim, then clears the hold flag of dead peer
// entries no cell names any more, so that they can be reused. A dead cell's claim changes
// only under a new owner, whose CAS changed the owner word: so the CAS that frees the cell
// from the owner word loaded with the claim fails if the claim may have changed since.
func (e *endpoint) freeDeadCells(dead []deadCell) {
	for _, d := range dead {
		if d.claim == 0 {
			atomic.CompareAndSwapUint32(d.cell.owner, d.owner, freeOwner(d.owner))
		}
	}
	peers, err := e.seg.Peers()
	if err != nil {
		return
	}
	for _, p := range peers {
		if p.Alive || !p.Hold {
			continue
		}
		named := false
		for i := 0; i < numCells && !named; i++ {
			named = ownerIndex(atomic.LoadUint32(e.cellAt(i).owner)) == p.Index
		}
		if !named {
			_, _ = e.seg.ClearHold(p.Index)
		}
	}
}
