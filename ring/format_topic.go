package ring

import (
	"fmt"

	"github.com/shmq/shmq/internal/layout"
)

// Topic format: fixed slots like MPMC (format_mpmc.go: a 16-byte header of sequence, length
// and type, then the payload), read by every subscriber at its own position, written by one
// publisher at a time under the topic lock.
//
// Positions are sequence numbers: the record with sequence s lives in slot s mod slots. A
// slot's sequence word is mark(s) = 2s+1 once a publisher has begun writing record s into
// it (an all-zero ring has no record). The published count (offWritePos, "tail") says which
// records are complete: s < tail. So a subscriber at s:
//
//	tail <= s                  nothing to read yet
//	slot seq == mark(s)        record s: read it; after use, the same check says whether a
//	                           publisher has begun overwriting it meanwhile (a sequence lock)
//	slot seq >  mark(s)        overwritten by a later lap: the subscriber was lapped
//	slot seq <  mark(s)        impossible for a correct publisher: ErrCorrupt
//
// A publisher marks a slot (a plain store and a store-store fence) before it writes the
// payload, and publishes a whole batch with one store of tail.

// Overflow policies of a topic, kept in the descriptor with the slot size.
type Policy uint8

const (
	// Block makes a publisher wait for room: a record is overwritten only once every live
	// subscriber has released it. A subscriber whose process died stops holding publishers
	// back within the liveness interval (about 100 ms).
	Block Policy = 1
	// Overwrite never makes a publisher wait: the oldest record is overwritten. A lapped
	// subscriber gets a *LagError saying how many records it missed, and continues with the
	// oldest one still in the ring.
	Overwrite Policy = 2
	// Latest is Overwrite for state rather than events: a subscriber's Next skips to the
	// newest record (counting what it skipped, never reporting it as an error), and
	// Subscriber.Load reads the newest value of a one-value blackboard.
	Latest Policy = 3
)

// String returns the policy's name, as ParsePolicy reads it.
func (p Policy) String() string {
	switch p {
	case Block:
		return "block"
	case Overwrite:
		return "overwrite"
	case Latest:
		return "latest"
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// ParsePolicy reads "block", "overwrite" or "latest".
func ParsePolicy(s string) (Policy, error) {
	for _, p := range []Policy{Block, Overwrite, Latest} {
		if s == p.String() {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown topic policy %q (want block, overwrite or latest)", s)
}

func (p Policy) valid() bool { return p >= Block && p <= Latest }

// A topic's slot size and policy share the descriptor's Params[paramSlotSize]: the slot size
// in the low 32 bits, the policy in the 8 above (zero for SPSC and MPMC rings).
const policyShift = 32

func packSlotParam(slot uint32, p Policy) uint64 { return uint64(slot) | uint64(p)<<policyShift }

func unpackSlotParam(v uint64) (slot uint64, p Policy, rest uint64) {
	return v & (1<<policyShift - 1), Policy(v >> policyShift), v >> (policyShift + 8)
}

// Topic words in the kind header, in a block of their own beside the published count
// (offWritePos), so that a subscriber polling the count does not take the line publishers
// write to lock: written by publishers, and by subscribers joining (under the lock).
const (
	offTopicBlock = 7 * blockSize
	// offTopicLock is the topic lock, a uint64: 0 or the holder's lockWord. Publishers hold
	// it from their first Reserve to Commit or Abort; a subscriber joining holds it while it
	// takes its subscription, so that its start position is fixed with no publisher writing.
	offTopicLock = offTopicBlock
	// offSubsGen counts changes of the gating set (a subscription taken), so that a Block
	// publisher holding the lock knows when to rescan the subscriptions.
	offSubsGen = offTopicBlock + 8
	// offSubsUsed is a mask of the subscription entries ever taken, so that scans skip the
	// rest. Bits are never cleared: a scan based on it misses no entry in use.
	offSubsUsed = offTopicBlock + 16
)

var _ [offCells - offTopicBlock - blockSize]struct{} // the block lies before the cells

// lockWord is the topic lock's value while held: the holder's peer index + 1 in the low 8
// bits, its pid in the next 32, and a count of acquisitions above, so that a lock taken over
// from a dead holder (CAS from the value seen dead) never takes a lock acquired since.
func lockWord(prev uint64, peer int, pid int) uint64 {
	return (prev>>40+1)<<40 | uint64(uint32(pid))<<8 | uint64(peer+1)
}

func lockHolder(w uint64) (peer int, pid int, held bool) {
	return int(w&0xff) - 1, int(uint32(w >> 8)), w&0xff != 0
}

// lockFree is the value a holder stores to release: the count kept, no holder.
func lockFree(w uint64) uint64 { return w >> 40 << 40 }

// Subscription entries: numSubs blocks in the kind header (in the region MPMC rings use for
// claim cells), each written on the hot path only by its holder (its position), so that a
// subscriber never writes a line another process writes. They live here rather than in the
// peer entries because a durable subscription outlives its holder's peer entry.
const (
	numSubs     = 64
	offSubs     = offCells
	subState    = 0  // uint64: see subWord; 0 when free
	subPos      = 8  // uint64: the next sequence to read (everything before it released)
	subMissed   = 16 // uint64: records the subscriber missed (lapped, or skipped by Latest)
	subName     = 64 // durable name: a length byte, then up to maxSubName bytes
	maxSubName  = blockSize - subName - 1
	subsEnd     = offSubs + numSubs*blockSize
	subInUse    = 1 << 40
	subDurable  = 1 << 41
	subGenShift = 42
)

var (
	_ [kindHeaderUsed - subsEnd]struct{} // the entries fit the header
	_ [64 - numSubs]struct{}             // one bit per entry in offSubsUsed
)

// subOffset is the offset of subscription entry i in the kind header.
func subOffset(i int) int { return offSubs + i*blockSize }

// subWord is a subscription's state: in use, durable or not, its holder (peer index + 1 in
// the low 8 bits, 0 when a durable subscription has no holder, and the holder's pid in the
// next 32), and a generation bumped by every change, so that a CAS based on a stale look
// fails.
func subWord(prev uint64, durable bool, peer, pid int) uint64 {
	w := (prev>>subGenShift + 1) << subGenShift
	w |= subInUse
	if durable {
		w |= subDurable
	}
	if peer >= 0 {
		w |= uint64(uint32(pid))<<8 | uint64(peer+1)
	}
	return w
}

func subHolder(w uint64) (peer, pid int, held bool) { return lockHolder(w & (1<<40 - 1)) }

// topicMark is the slot sequence word of record s (never 0).
func topicMark(s uint64) uint64 { return 2*s + 1 }

// topicSlots addresses the slots of a topic's data region.
type topicSlots = mpmcSlots

// readSubName returns the durable name in entry e (untrusted: the length is checked).
func readSubName(entry []byte) string {
	n := int(entry[subName])
	if n > maxSubName {
		n = maxSubName
	}
	return string(entry[subName+1 : subName+1+n])
}

func writeSubName(entry []byte, name string) {
	entry[subName] = byte(len(name))
	copy(entry[subName+1:subName+1+maxSubName], name)
}

// subEntry returns the bytes of subscription entry i of the kind header hdr.
func subEntry(hdr []byte, i int) []byte {
	off := subOffset(i)
	return hdr[off : off+blockSize : off+blockSize]
}

func subU64(entry []byte, off int) *uint64 { return layout.Uint64(entry, off) }
