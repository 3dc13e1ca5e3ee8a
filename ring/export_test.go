package ring

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

func kindHeader(seg *shm.Segment) []byte {
	d := seg.Descriptor()
	return seg.Header()[d.KindHeaderOffset : d.KindHeaderOffset+d.KindHeaderSize]
}

// SetPositions sets both positions of a ring no endpoint is attached to, so that tests can
// start near 2^64 and cross the wrap of the counters. pos is rounded down to a multiple of
// 8, as every position of an SPSC ring is.
func SetPositions(seg *shm.Segment, pos uint64) {
	pos &^= 7
	atomic.StoreUint64(layout.Uint64(kindHeader(seg), offWritePos), pos)
	atomic.StoreUint64(layout.Uint64(kindHeader(seg), offReadPos), pos)
}

// SetWritePos overwrites the published write position, as a broken peer would.
func SetWritePos(seg *shm.Segment, pos uint64) {
	atomic.StoreUint64(layout.Uint64(kindHeader(seg), offWritePos), pos)
}

// SetReadPos overwrites the released read position, as a broken peer would.
func SetReadPos(seg *shm.Segment, pos uint64) {
	atomic.StoreUint64(layout.Uint64(kindHeader(seg), offReadPos), pos)
}

// DataWaiters is the mask of processes with a reader marked asleep.
func DataWaiters(seg *shm.Segment) uint64 {
	return atomic.LoadUint64(layout.Uint64(kindHeader(seg), offDataWaiters))
}

// SetMPMCPositions sets both positions of an MPMC ring nobody is attached to, and every
// slot's sequence to match, so that tests can start near 2^64.
func SetMPMCPositions(seg *shm.Segment, pos uint64) {
	d := seg.Descriptor()
	slotSize := d.Params[paramSlotSize]
	slots := d.DataSize / slotSize
	mask := slots - 1
	for i := uint64(0); i < slots; i++ {
		first := pos + ((i - pos) & mask) // first position >= pos that lands in slot i
		slot := seg.Data()[i*slotSize:]
		atomic.StoreUint64(layout.Uint64(slot, 0), first-i)
	}
	atomic.StoreUint64(layout.Uint64(kindHeader(seg), offWritePos), pos)
	atomic.StoreUint64(layout.Uint64(kindHeader(seg), offReadPos), pos)
}

// CellsInUse counts the claim cells that have an owner.
func CellsInUse(seg *shm.Segment) int {
	n := 0
	for i := 0; i < numCells; i++ {
		if !isFree(atomic.LoadUint32(layout.Uint32(kindHeader(seg), offCells+i*cellSize+cellOwner))) {
			n++
		}
	}
	return n
}

// SetSlotSeq overwrites the sequence word of the MPMC slot of pos, as a peer would.
func SetSlotSeq(seg *shm.Segment, pos, seq uint64) {
	d := seg.Descriptor()
	slotSize := d.Params[paramSlotSize]
	slots := d.DataSize / slotSize
	atomic.StoreUint64(layout.Uint64(seg.Data(), int((pos&(slots-1))*slotSize)), seq)
}

// SlotBase is the lap base of pos in an MPMC ring of seg: the sequence meaning "free".
func SlotBase(seg *shm.Segment, pos uint64) uint64 {
	d := seg.Descriptor()
	slots := d.DataSize / d.Params[paramSlotSize]
	return pos - pos&(slots-1)
}

// cellOfPeer is the offset in the kind header of the first claim cell that peer entry idx
// owns with role, or -1.
func cellOfPeer(seg *shm.Segment, idx int, role uint32) int {
	h := kindHeader(seg)
	for i := 0; i < numCells; i++ {
		off := cellOffset(i)
		if ownerIndex(atomic.LoadUint32(layout.Uint32(h, off+cellOwner))) == idx &&
			atomic.LoadUint32(layout.Uint32(h, off+cellRole))&cellRoleMask == role {
			return off
		}
	}
	return -1
}

// ReaderClaimOfPeer is the claim word of the reader cell that peer entry idx owns, or nil.
func ReaderClaimOfPeer(seg *shm.Segment, idx int) *uint64 {
	off := cellOfPeer(seg, idx, cellReader)
	if off < 0 {
		return nil
	}
	return layout.Uint64(kindHeader(seg), off+cellClaim)
}

// SetSkipClaimOfPeer makes the reader cell that peer entry idx owns hold the skip lock of
// the slot of pos, as a reader that locked it would.
func SetSkipClaimOfPeer(seg *shm.Segment, idx int, pos uint64) bool {
	off := cellOfPeer(seg, idx, cellReader)
	if off < 0 {
		return false
	}
	h := kindHeader(seg)
	atomic.StoreUint32(layout.Uint32(h, off+cellRole), cellReader|cellFlagSkip)
	atomic.StoreUint64(layout.Uint64(h, off+cellClaim), pos+1)
	return true
}

// RepairPoint names a moment of MPMC repair at which a test may hold a repairer.
type RepairPoint = repairPoint

// The repair points (see repair_hook.go).
const (
	RepairDeadScanned  = repairDeadScanned
	RepairSkipDecided  = repairSkipDecided
	RepairOnDeath      = repairOnDeath
	RepairStallWatched = repairStallWatched
)

// SetRepairHook sets the function MPMC repair calls at each RepairPoint (nil for none).
// Call it before any endpoint attaches.
func SetRepairHook(fn func(RepairPoint)) { repairHook = fn }

// ForgeWriterClaim stores in w's claim cell what tryReserve stores right before its CAS on
// the write position, which is what a writer killed at that instant leaves. It returns the
// claim.
func ForgeWriterClaim(w *MPMCWriter) uint64 {
	c := atomic.LoadUint64(w.writePos) + 1
	atomic.StoreUint64(w.cell.claim, c)
	return c
}

// ForgeReaderClaim stores in r's claim cell what tryNext stores right before its CAS on the
// read position, which is what a reader killed at that instant leaves, and returns it: the
// claim of the position the read position names; or, with held, the claim of a record
// another reader holds now (if there is one), as a reader leaves it whose CAS lost to that
// reader and who died before it cleared its claim.
func ForgeReaderClaim(r *MPMCReader, held bool) uint64 {
	c := atomic.LoadUint64(r.readPos) + 1
	if held {
		for i := 0; i < numCells; i++ {
			o := r.cellAt(i)
			rf := atomic.LoadUint32(o.role)
			if cl := atomic.LoadUint64(o.claim); o.claim != r.cell.claim && rf == cellReader && cl != 0 {
				c = cl
				break
			}
		}
	}
	atomic.StoreUint64(r.cell.claim, c)
	return c
}

// Cell is one claim cell in use, as Cells reads it.
type Cell struct {
	Index int    // the cell's number
	Owner int    // the owner's peer-table index
	Role  uint32 // 1 writer, 2 reader
	Claim uint64 // position + 1, 0 for none
}

// Cells lists the claim cells that have an owner.
func Cells(seg *shm.Segment) []Cell {
	h := kindHeader(seg)
	var out []Cell
	for i := 0; i < numCells; i++ {
		off := cellOffset(i)
		o := atomic.LoadUint32(layout.Uint32(h, off+cellOwner))
		if isFree(o) {
			continue
		}
		out = append(out, Cell{Index: i, Owner: ownerIndex(o),
			Role: atomic.LoadUint32(layout.Uint32(h, off+cellRole)) & cellRoleMask, Claim: atomic.LoadUint64(layout.Uint64(h, off+cellClaim))})
	}
	return out
}

// CheckMPMCIdle checks the words of an MPMC ring whose messages were all read and whose
// endpoints are all gone: the read position equals the write position, every slot is free
// for its next position, and no claim cell holds a claim.
func CheckMPMCIdle(seg *shm.Segment) error {
	h := kindHeader(seg)
	wp := atomic.LoadUint64(layout.Uint64(h, offWritePos))
	rp := atomic.LoadUint64(layout.Uint64(h, offReadPos))
	if wp != rp {
		return fmt.Errorf("write position %d, read position %d", wp, rp)
	}
	d := seg.Descriptor()
	slotSize := d.Params[paramSlotSize]
	slots := d.DataSize / slotSize
	for i := uint64(0); i < slots; i++ {
		p := rp + i
		idx := p & (slots - 1)
		if seq := atomic.LoadUint64(layout.Uint64(seg.Data(), int(idx*slotSize))); seq != p-idx {
			return fmt.Errorf("slot %d (next position %d) has sequence %d, want %d", idx, p, seq, p-idx)
		}
	}
	for _, c := range Cells(seg) {
		if c.Claim != 0 {
			return fmt.Errorf("cell %d (peer %d, role %d) still claims position %d", c.Index, c.Owner, c.Role, c.Claim-1)
		}
	}
	return nil
}

// CorruptRecordLength overwrites the length word of the record at position pos with one no
// writer writes: for SPSC, pos counts records of a ring of equal-sized records from 0 (pos *
// the first record's span); for MPMC, pos is the slot's position.
func CorruptRecordLength(seg *shm.Segment, pos uint64) {
	d := seg.Descriptor()
	data := seg.Data()
	switch d.Kind {
	case SPSC:
		span := recordSpan(int(binary.LittleEndian.Uint32(data[0:])))
		off := (pos * span) & (d.DataSize - 1)
		binary.LittleEndian.PutUint32(data[off:], uint32(d.DataSize))
	case MPMC:
		slotSize := d.Params[paramSlotSize]
		off := (pos & (d.DataSize/slotSize - 1)) * slotSize
		binary.LittleEndian.PutUint32(data[off+slotOffLen:], uint32(slotSize))
	}
}
