package ring

import (
	"fmt"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// The ring format common to every kind: where the hot words live in the segment's kind
// header, what the ring keeps in each peer entry, and the claim cells. The record and slot
// formats are in format_spsc.go and format_mpmc.go. Every offset is part of the format,
// asserted at compile time below; changing one is a new formatVersion.

// formatVersion is the ring format this code writes and reads, kept in the descriptor's
// Params[0]. Another value is refused with ErrVersion. Version 2: a claim cell's owner word
// carries a generation (version 1 code would take a live owner with one for a dead peer).
const formatVersion = 2

// Descriptor parameters (shm.Spec.Params) of a ring segment.
const (
	paramVersion  = 0 // formatVersion
	paramSlotSize = 1 // MPMC or topic slot size (low 32 bits) and topic policy (format_topic.go); 0 for SPSC
)

// blockSize is the unit of the kind header: two cache lines, so that adjacent-line
// prefetching never makes two writers share a line. Each block is written by one side only
// (except the waiter masks, written by a side only as it goes to sleep or wakes up), so a
// busy writer and a busy reader never write the same line.
const blockSize = 128

// Offsets in the kind header.
const (
	// offWritePos: SPSC published write position / MPMC claim position / topic published
	// count, uint64. Written by the writer(s); read by readers, Peek and ReadStats. A topic
	// keeps its lock and subscription words in the rest of the block (format_topic.go).
	offWritePos = 0 * blockSize
	// offReadPos: SPSC released read position / MPMC read claim position, uint64.
	offReadPos = 1 * blockSize

	// Eventcount "data available": readers sleep on the seq word, writers bump it. The
	// waiters word is a mask over peer-table indexes: one atomic OR both marks a sleeper and
	// counts it, so a process that dies asleep leaves exactly its own bit, which a live peer
	// finds (the entry's lock is free) and clears.
	offDataSeq      = 2 * blockSize    // uint32 futex word
	offDataWaiters  = 2*blockSize + 64 // uint64 mask of processes with a reader asleep
	offSpaceSeq     = 3 * blockSize    // uint32 futex word: room available
	offSpaceWaiter  = 3*blockSize + 64 // uint64 mask of processes with a writer asleep
	offDataRounds   = 2*blockSize + 72 // uint64: sleep rounds begun on the data event (see event)
	offDataGranted  = 2*blockSize + 80 // uint64: sleep rounds of the data event already woken
	offSpaceRounds  = 3*blockSize + 72 // uint64: sleep rounds begun on the space event
	offSpaceGranted = 3*blockSize + 80 // uint64: sleep rounds of the space event already woken
	offStream       = 4 * blockSize    // uint64 stream word, see stream.go
	offRetiredW     = 5 * blockSize    // counters of writers that closed
	offRetiredR     = 6 * blockSize    // counters of readers that closed
	offCells        = 32 * blockSize   // claim cells, numCells of cellSize bytes
	kindHeaderUsed  = offCells + numCells*cellSize
)

// Claim cells: one per MPMC endpoint, taken when it attaches and given back when it closes.
// A cell says which peer entry owns it and which position the endpoint has claimed but not
// finished (a writer's reserved slots, a reader's borrowed record), so that when the owning
// process dies a live peer can repair exactly what it left.
const (
	numCells   = 1024
	cellSize   = 16
	cellClaim  = 0  // uint64: lowest position claimed + 1; 0 when none
	cellOwner  = 8  // uint32: the owner word, see below
	cellRole   = 12 // uint32: cellWriter or cellReader, with the claim's flags above them
	cellWriter = 1
	cellReader = 2
	// Claim flags, in the role word (never in the claim, which is a whole position + 1):
	// cellFlagRepair marks a claim a repairer took over from a dead reader and has not yet
	// resolved; cellFlagSkip a claim that holds the skip lock of its slot. A cell's owner sets
	// the flags before it stores such a claim and clears them after it clears the claim, so
	// whoever reads the claim and then the flags sees the flags that go with it.
	cellRoleMask   = 0xff
	cellFlagRepair = 1 << 8
	cellFlagSkip   = 1 << 9
	// The owner word: the owner's peer index + 1 in the low bits (0 when the cell is free),
	// a generation above them and the orphan flag on top. Every new owner (an endpoint
	// taking a free cell, a repairer taking a dead owner's cell over) adds 1 to the
	// generation with its CAS, and the generation stays when the cell is freed: so a CAS
	// from an owner word loaded earlier fails once the cell has changed hands since, even
	// when its new owner's process reuses the old owner's peer entry.
	cellIndexMask = 0xff
	cellGenShift  = 8
	cellGenMask   = 0x7fffff << cellGenShift
	// cellOrphan marks a cell whose endpoint closed with a claim outstanding (a reader that
	// closed with a record borrowed): it is repaired as if its owner had died.
	cellOrphan = 1 << 31
	// cellLines is how many blocks the cells fill. Cell i lies in block i mod cellLines, so
	// the first cellLines cells handed out (every ring but the busiest) each have a block
	// of their own: two processes storing their claims per message never share a line.
	cellLines = numCells * cellSize / blockSize
)

// cellOffset is the offset of claim cell i in the kind header.
func cellOffset(i int) int { return offCells + (i%cellLines)*blockSize + (i/cellLines)*cellSize }

// Peer words: the ring's part of each peer entry (shm.Peer.Words), one entry per process
// and segment, shared by every endpoint that process has on the ring.
const (
	pwWriters    = 0                            // uint32: open writer endpoints of this process
	pwReaders    = 4                            // uint32: open reader endpoints of this process
	pwWriterCtrs = 8                            // writer counters, numCounters uint64s
	pwReaderCtrs = pwWriterCtrs + numCounters*8 // reader counters
	// pwClosing (uint32) counts the writer endpoints of this process that are closing: from
	// before their Close first looks for other live writers until after it has ended the
	// stream or found that another writer lives. Zero in a process of an older build.
	pwClosing     = pwReaderCtrs + numCounters*8
	peerWordsUsed = pwClosing + 8
)

// Counter indexes, in the peer words and in the retired blocks.
const (
	ctrMessages   = iota // messages written (writer) or read (reader)
	ctrBytes             // payload bytes
	ctrFull              // writer found the ring full
	ctrEmpty             // reader found the ring empty
	ctrFutexWaits        // sleeps in futex.Wait
	ctrFutexWakes        // futex.Wake calls made for the other side
	ctrDrops             // MPMC slots skipped for a dead writer
	ctrLateWakes         // futex waits that timed out although the condition held: a lost wake-up
	ctrRejected          // records a reader rejected (released without being accepted)
	numCounters
)

// Compile-time checks: each fails to compile if the inequality in its comment breaks.
var (
	_ [blockSize - numCounters*8]struct{}              // retired counters fit a block
	_ [layout.PeerUserSize - peerWordsUsed]struct{}    // peer words fit the entry
	_ [layout.KindHeaderSize - kindHeaderUsed]struct{} // the ring fits the kind header
	_ [offCells - offRetiredR - blockSize]struct{}     // blocks end before the cells
	_ [layout.PeerCount - 64]struct{}                  // one waiter bit per peer entry
	_ [64 - layout.PeerCount]struct{}
	_ [-(offDataWaiters%8 + offSpaceWaiter%8 + offStream%8 + cellSize%8)]struct{}     // aligned words
	_ [-(numCells*cellSize%blockSize + blockSize%cellSize)]struct{}                   // cells tile whole blocks
	_ [cellIndexMask - layout.PeerCount]struct{}                                      // a peer index + 1 fits the owner word
	_ [-(cellIndexMask&cellGenMask + cellOrphan&(cellIndexMask|cellGenMask))]struct{} // owner word fields apart
)

// Kinds of ring segment, registered with package shm so that shm.Kind prints their names.
const (
	SPSC shm.Kind = 1 // one writer, one reader, variable-length records
	MPMC shm.Kind = 2 // any number of writers and readers, fixed slots
	// Topic is publish-subscribe: any number of publishers, every record read by every
	// subscriber at its own position, fixed slots (format_topic.go).
	Topic shm.Kind = 3
)

func init() {
	shm.RegisterKind(SPSC, "spsc")
	shm.RegisterKind(MPMC, "mpmc")
	shm.RegisterKind(Topic, "topic")
}

// MinSlotSize is the smallest MPMC slot: a slot header plus eight bytes of payload.
const MinSlotSize = slotHeader + 8

// validSlot reports whether an MPMC ring of size bytes can have slots of slot bytes: a power
// of two from MinSlotSize to half the ring.
func validSlot(slot, size uint64) bool {
	return slot >= MinSlotSize && slot&(slot-1) == 0 && slot <= size/2
}

// geometry is a ring's shape, checked once from the segment's descriptor.
type geometry struct {
	kind     shm.Kind
	size     uint64 // data region bytes, a power of two
	slotSize uint64 // MPMC, topic
	slots    uint64 // MPMC, topic
	policy   Policy // topic
}

// parseGeometry checks that d describes a ring this code reads: a known kind, the format
// version, and sizes a ring creator writes. d was validated by shm (sizes are powers of
// two in range), but its parameters are the ring's to check.
func parseGeometry(d shm.Descriptor) (geometry, error) {
	g := geometry{kind: d.Kind, size: d.DataSize}
	if d.Kind != SPSC && d.Kind != MPMC && d.Kind != Topic {
		return g, fmt.Errorf("%w: segment kind %v is not a ring", ErrKind, d.Kind)
	}
	if v := d.Params[paramVersion]; v != formatVersion {
		return g, fmt.Errorf("%w: ring format %d, this code reads %d", ErrVersion, v, formatVersion)
	}
	if d.KindHeaderSize < kindHeaderUsed {
		return g, fmt.Errorf("%w: kind header of %d bytes, a ring needs %d", ErrCorrupt, d.KindHeaderSize, kindHeaderUsed)
	}
	slot := d.Params[paramSlotSize]
	switch d.Kind {
	case SPSC:
		if slot != 0 {
			return g, fmt.Errorf("%w: spsc ring with a slot size (%d)", ErrCorrupt, slot)
		}
	case MPMC:
		if !validSlot(slot, d.DataSize) {
			return g, fmt.Errorf("%w: mpmc slot size %d is not a power of two from %d to half of %d", ErrCorrupt, slot, MinSlotSize, d.DataSize)
		}
		g.slotSize, g.slots = slot, d.DataSize/slot
	case Topic:
		sl, p, rest := unpackSlotParam(slot)
		if !validSlot(sl, d.DataSize) || !p.valid() || rest != 0 {
			return g, fmt.Errorf("%w: topic slot size %d and policy %v: want a power of two from %d to half of %d and block, overwrite or latest", ErrCorrupt, sl, p, MinSlotSize, d.DataSize)
		}
		g.slotSize, g.slots, g.policy = sl, d.DataSize/sl, p
	}
	return g, nil
}

// Spec describes a ring segment to create.
type Spec struct {
	Kind shm.Kind // SPSC, MPMC or Topic
	// Size is the data region: a power of two from 4 KiB to 1 TiB. For SPSC it bounds the
	// largest message to Size/2 - 8 bytes.
	Size uint64
	// SlotSize is the MPMC or topic slot size, a power of two from MinSlotSize to Size/2;
	// messages are up to SlotSize - 16 bytes. It must be 0 for SPSC.
	SlotSize uint32
	// Policy is a topic's overflow policy (Block, Overwrite or Latest); 0 for other kinds.
	Policy Policy
}

// SegmentSpec is the shm.Spec that lays out spec, after checking it: ErrKind for a kind that
// is not a ring, shm.ErrInvalidSpec for sizes that do not fit.
func (spec Spec) SegmentSpec() (shm.Spec, error) {
	s := shm.Spec{Kind: spec.Kind, DataSize: spec.Size}
	s.Params[paramVersion] = formatVersion
	s.Params[paramSlotSize] = uint64(spec.SlotSize)
	switch spec.Kind {
	case SPSC:
		if spec.SlotSize != 0 {
			return s, fmt.Errorf("%w: spsc rings have no slot size", shm.ErrInvalidSpec)
		}
	case MPMC, Topic:
		sl := uint64(spec.SlotSize)
		if !validSlot(sl, spec.Size) {
			return s, fmt.Errorf("%w: slot size %d is not a power of two from %d to half the size", shm.ErrInvalidSpec, sl, MinSlotSize)
		}
	default:
		return s, fmt.Errorf("%w: %v is not a ring kind (want spsc, mpmc or topic)", ErrKind, spec.Kind)
	}
	switch {
	case spec.Kind == Topic && !spec.Policy.valid():
		return s, fmt.Errorf("%w: topic policy %v (want block, overwrite or latest)", shm.ErrInvalidSpec, spec.Policy)
	case spec.Kind == Topic:
		s.Params[paramSlotSize] = packSlotParam(spec.SlotSize, spec.Policy)
	case spec.Policy != 0:
		return s, fmt.Errorf("%w: only topics have a policy", shm.ErrInvalidSpec)
	}
	return s, nil
}

// Create creates a ring segment named name (see shm.Create for the options and errors).
func Create(name string, spec Spec, opts shm.Options) (*shm.Segment, error) {
	s, err := spec.SegmentSpec()
	if err != nil {
		return nil, err
	}
	return shm.Create(name, s, opts)
}

// OpenOrCreate creates the ring segment name, or opens it if it exists with the same spec
// (shm.ErrMismatch otherwise). The bool says whether this call created it. See
// shm.OpenOrCreate.
func OpenOrCreate(name string, spec Spec, opts shm.Options) (*shm.Segment, bool, error) {
	s, err := spec.SegmentSpec()
	if err != nil {
		return nil, false, err
	}
	return shm.OpenOrCreate(name, s, opts)
}

// SpecOf returns the ring spec a segment was created with, after the same checks as opening
// an endpoint: ErrKind for a segment that is not a ring, ErrVersion for another ring format,
// ErrCorrupt for parameters no ring creator writes.
func SpecOf(d shm.Descriptor) (Spec, error) {
	g, err := parseGeometry(d)
	if err != nil {
		return Spec{}, err
	}
	return Spec{Kind: g.kind, Size: g.size, SlotSize: uint32(g.slotSize), Policy: g.policy}, nil
}
