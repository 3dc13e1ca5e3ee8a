package dlq

import (
	"fmt"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// Kind is the shm segment kind of a dead-letter queue, registered as "dlq". Its value
// spells "DLQ" in ASCII, far from the small numbers other packages use.
const Kind shm.Kind = 0x444c51

func init() { shm.RegisterKind(Kind, "dlq") }

// formatVersion is the DLQ format written by this code, in the high 32 bits of
// Descriptor.Params[0] (the slot size is in the low 32 bits). Params[1] is zero.
const formatVersion = 1

// Slot geometry limits.
const (
	minSlotSize = 128
	maxSlotSize = 1 << 24
)

// Kind header words (uint64, offsets from the kind header's start). Every one is changed
// with atomic read-modify-writes by any peer; nothing in them is trusted beyond display,
// except nextSeq, which only orders entries.
const (
	khNextSeq      = 0  // the next entry's sequence number (fetch-add by Put)
	khPuts         = 8  // entries put
	khTaken        = 16 // entries taken for good (the function succeeded)
	khReturned     = 24 // entries given back by a Take whose function failed (or whose Queue closed)
	khRecovered    = 32 // entries given back after their taker's process died
	khPurged       = 40 // entries removed by Purge
	khFull         = 48 // Puts refused with ErrFull
	khCorrupt      = 56 // slots found corrupt and dropped by Take
	khAbandoned    = 64 // slots freed after a Put's process died while writing
	kindHeaderUsed = 72
)

var _ [layout.KindHeaderSize - kindHeaderUsed]struct{} // the words fit the kind header

// A slot: a header, then one entry record (record.go).
//
//	0  u64  state word: state (bits 0-7), holder's peer entry (bits 8-15), holder's pid
//	        (bits 32-63); holder fields are zero unless the state is Writing or Taken
//	8  u64  sequence number of the entry (stored before the state becomes Ready)
//	16      record
const (
	slotOffState = 0
	slotOffSeq   = 8
	slotHeader   = 16
)

// Slot states.
const (
	stateFree    = 0
	stateWriting = 1 // a Put fills the slot
	stateReady   = 2 // holds an entry
	stateTaken   = 3 // holds an entry handed to a Take
)

// stateWord packs a state and its holder.
func stateWord(state uint64, peer, pid int) uint64 {
	return state | uint64(peer&0xff)<<8 | uint64(uint32(pid))<<32
}

// unpackState splits a state word; ok is false for a word no peer writes.
func unpackState(w uint64) (state uint64, peer, pid int, ok bool) {
	state, peer, pid = w&0xff, int(w>>8&0xff), int(w>>32)
	switch state {
	case stateFree, stateReady:
		ok = w>>8 == 0
	case stateWriting, stateTaken:
		ok = peer < layout.PeerCount && pid > 0 && w>>16&0xffff == 0
	}
	return state, peer, pid, ok
}

// geometry is what the descriptor says about the slots, validated once.
type geometry struct {
	slotSize uint64
	slots    uint64
}

func parseGeometry(d shm.Descriptor) (geometry, error) {
	if d.Kind != Kind {
		return geometry{}, fmt.Errorf("%w: kind %v", ErrKind, d.Kind)
	}
	if v := d.Params[0] >> 32; v != formatVersion {
		return geometry{}, fmt.Errorf("%w: version %d, this code reads %d", ErrVersion, v, formatVersion)
	}
	size := d.Params[0] & (1<<32 - 1)
	if size < minSlotSize || size > maxSlotSize || size&(size-1) != 0 || size > d.DataSize || d.Params[1] != 0 {
		return geometry{}, fmt.Errorf("%w: slot size %d in a data region of %d (params %v)", ErrCorrupt, size, d.DataSize, d.Params)
	}
	return geometry{slotSize: size, slots: d.DataSize / size}, nil
}

// Config sizes a new DLQ. The zero value means the defaults.
type Config struct {
	// Capacity is the number of entries the queue holds; 0 means DefaultCapacity. It is
	// rounded up so that the slots fill a power-of-two data region (Queue.Cap says how
	// many there are).
	Capacity int
	// MaxEntry is the largest origin + error text + data, in bytes, an entry may have; 0
	// means DefaultMaxEntry. Slots are sized for it (rounded up to a power of two).
	MaxEntry int
}

// Defaults for the zero fields of Config.
const (
	DefaultCapacity = 1024
	DefaultMaxEntry = 4096 - slotHeader - recordHeader
)

// spec lays out c as a segment spec.
func (c Config) spec() (shm.Spec, error) {
	if c.Capacity == 0 {
		c.Capacity = DefaultCapacity
	}
	if c.MaxEntry == 0 {
		c.MaxEntry = DefaultMaxEntry
	}
	if c.Capacity < 0 || c.MaxEntry < 0 || c.MaxEntry > maxSlotSize-slotHeader-recordHeader || c.Capacity > 1<<24 {
		return shm.Spec{}, fmt.Errorf("%w: Capacity %d, MaxEntry %d (at most %d entries of %d bytes)",
			ErrInvalid, c.Capacity, c.MaxEntry, 1<<24, maxSlotSize-slotHeader-recordHeader)
	}
	slot := max(shm.NextPow2(uint64(c.MaxEntry+slotHeader+recordHeader)), minSlotSize)
	data := max(shm.NextPow2(uint64(c.Capacity))*slot, layout.MinDataSize)
	return shm.Spec{Kind: Kind, DataSize: data, Params: [2]uint64{formatVersion<<32 | slot, 0}}, nil
}
