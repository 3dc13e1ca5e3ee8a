package ring

import (
	"fmt"
	"sync/atomic"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// A cell is one claim cell of the kind header (see format.go), held by one MPMC endpoint.
type cell struct {
	claim *uint64 // lowest position claimed + 1, 0 when none; written by the holder only
	owner *uint32
	role  *uint32 // role | claim flags; written by the holder only (and by takeCell)
}

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
	me := uint32(l.peer.Index() + 1)
	for i := 0; i < numCells; i++ {
		c := e.cellAt(i)
		if atomic.LoadUint32(c.owner) != 0 || !atomic.CompareAndSwapUint32(c.owner, 0, me) {
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
		atomic.StoreUint32(c.owner, 0)
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
	flags uint32 // the claim flags as loaded, after the claim
}

// scanCells returns the cells whose owner is dead or orphaned them, and reports for each
// live cell of role its claim and flags to fn, except the cell whose claim word is skip.
// Slow path: one liveness check per owning process.
func (e *endpoint) scanCells(role uint32, live func(claim uint64, flags uint32), skip *uint64) []deadCell {
	var dead []deadCell
	alive := map[uint32]bool{}
	for i := 0; i < numCells; i++ {
		c := e.cellAt(i)
		o := atomic.LoadUint32(c.owner)
		if o == 0 {
			continue
		}
		isAlive := false
		if o&cellOrphan == 0 {
			a, seen := alive[o]
			if !seen {
				a, _ = e.seg.Alive(int(o) - 1)
				if o-1 >= layout.PeerCount {
					a = false
				}
				alive[o] = a
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
		dead = append(dead, deadCell{cell: c, owner: o, claim: claim, flags: rf &^ cellRoleMask})
	}
	return dead
}

// freeDeadCells frees the dead cells with no claim left, then clears the hold flag of dead
// peer entries no cell names any more, so that they can be reused.
func (e *endpoint) freeDeadCells(dead []deadCell) {
	for _, d := range dead {
		if atomic.LoadUint64(d.cell.claim) == 0 {
			atomic.CompareAndSwapUint32(d.cell.owner, d.owner, 0)
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
			named = atomic.LoadUint32(e.cellAt(i).owner) == uint32(p.Index+1)
		}
		if !named {
			_, _ = e.seg.ClearHold(p.Index)
		}
	}
}
