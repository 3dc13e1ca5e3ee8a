package ring

import (
	"encoding/binary"
	"fmt"

	"github.com/shmq/shmq/internal/layout"
)

// MPMC slot format: a 16-byte header (sequence uint64, payload length uint32, type uint32)
// and the payload. The sequence word, after Vyukov's bounded MPMC queue, says what the slot
// holds for position p (slot index i = p mod slots), stored relative to the lap base
// b = p - i so that an all-zero segment is a valid empty ring:
//
//	b          free: a writer may claim position p
//	b + 1      published: a reader may claim position p
//	b + slots  released: free for position p + slots
//
// A slot whose length word is skipLength carries no message: a writer died between claiming
// and publishing it (or aborted it), and it was published as a skip. This file is the only
// code that reads or writes the slot header.
const (
	slotHeader  = 16
	slotOffSeq  = 0
	slotOffLen  = 8
	slotOffType = 12
	skipLength  = ^uint32(0)
)

var _ [slotHeader - slotOffType - 4]struct{} // the header ends with the type word
var _ [slotOffType + 4 - slotHeader]struct{}

// MPMCMaxMessage is the largest payload of an MPMC ring with slots of slotSize bytes.
func MPMCMaxMessage(slotSize uint32) int { return int(slotSize) - slotHeader }

// mpmcSlots addresses the slots of an MPMC data region.
type mpmcSlots struct {
	mem      []byte // the data region
	slots    uint64
	slotSize uint64
}

func (m mpmcSlots) slot(pos uint64) []byte {
	off := (pos & (m.slots - 1)) * m.slotSize
	return m.mem[off : off+m.slotSize : off+m.slotSize]
}

// base is the lap base of pos: the sequence value that means "free for pos".
func (m mpmcSlots) base(pos uint64) uint64 { return pos - pos&(m.slots-1) }

func slotSeq(slot []byte) *uint64 { return layout.Uint64(slot, slotOffSeq) }

// mpmcRecord is a published slot as parseSlot read it.
type mpmcRecord struct {
	skip bool
	typ  uint32
	n    uint32
}

// parseSlot reads the header of a slot the caller has claimed (or, for Peek, seen
// published). The length is read once and checked: ErrCorrupt for a length longer than a
// slot holds.
func parseSlot(slot []byte, pos uint64) (mpmcRecord, error) {
	length := binary.LittleEndian.Uint32(slot[slotOffLen:])
	if length == skipLength {
		return mpmcRecord{skip: true}, nil
	}
	if uint64(length) > uint64(len(slot))-slotHeader {
		return mpmcRecord{}, fmt.Errorf("%w: slot at position %d says %d bytes, at most %d", ErrCorrupt, pos, length, len(slot)-slotHeader)
	}
	return mpmcRecord{typ: binary.LittleEndian.Uint32(slot[slotOffType:]), n: length}, nil
}

// putSlotHeader writes a claimed slot's length and type (not its sequence).
func putSlotHeader(slot []byte, typ uint32, n int) {
	binary.LittleEndian.PutUint32(slot[slotOffLen:], uint32(n))
	binary.LittleEndian.PutUint32(slot[slotOffType:], typ)
}

// putSlotSkip marks a claimed slot as carrying no message.
func putSlotSkip(slot []byte) { binary.LittleEndian.PutUint32(slot[slotOffLen:], skipLength) }
