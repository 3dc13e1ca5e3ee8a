package ring

import (
	"encoding/binary"
	"fmt"
)

// SPSC record format: an 8-byte header (payload length uint32, type uint32, little-endian)
// and the payload, padded to 8 bytes. A record that would cross the end of the data region
// is preceded by a padding record whose length word is padLength and which runs to the end.
// This file is the only code that reads or writes it.
const (
	recordHeader = 8
	padLength    = ^uint32(0)
)

var _ [recordHeader - 8]struct{} // the header is two uint32s
var _ [8 - recordHeader]struct{}

// SPSCMaxMessage is the largest payload an SPSC ring with a data region of size bytes
// carries: half the ring minus a record header, so that a record plus the padding before it
// always fits.
func SPSCMaxMessage(size uint64) int { return int(size/2 - recordHeader) }

func align8(n uint64) uint64 { return (n + 7) &^ 7 }

// recordSpan is the room a record of n payload bytes takes.
func recordSpan(n int) uint64 { return align8(recordHeader + uint64(n)) }

// spscRecord is a record found by parseSPSC: where it starts (after any padding), its type,
// and where its payload lies in the data region.
type spscRecord struct {
	pos   uint64 // position of its header (padding skipped)
	next  uint64 // position just past it
	typ   uint32
	start uint64 // payload offset in the data region
	n     uint32 // payload length
}

// parseSPSC reads the record at position pos of an SPSC data region, given the published
// write position wp (loaded once by the caller). Each header word is read from shared memory
// once and checked before it is used. It returns ok=false, with no error, when pos == wp
// (nothing to read), and ErrCorrupt for a header no correct writer writes: a record that runs
// past wp or the region, a length above the ring's maximum, padding that is not followed by a
// record (a writer publishes padding only together with the record after it).
func parseSPSC(data []byte, pos, wp uint64) (rec spscRecord, ok bool, err error) {
	if err := checkSPSCPositions(wp, pos, uint64(len(data))); err != nil {
		return rec, false, err
	}
	if pos == wp {
		return rec, false, nil
	}
	start, n, typ, next, err := parseSPSCAt(data, pos, wp)
	if err != nil {
		return rec, false, err
	}
	return spscRecord{pos: next - align8(recordHeader+n), next: next, typ: typ, start: start, n: uint32(n)}, true, nil
}

// parseSPSCAt is parseSPSC for positions already checked together (checkSPSCPositions)
// with pos != wp: a reader checks the write position once when it loads it, and every
// position it reaches from there stays within it, as each record span is checked against
// wp - pos. The header is checked as in parseSPSC. It returns the record's payload offset
// in the data region, its length and type, and the position past it, as separate values:
// a struct returned by a call that is not inlined is stored word by word and copied with
// wider loads, which stalls on store forwarding (a third of a record's reading time).
func parseSPSCAt(data []byte, pos, wp uint64) (start, n uint64, typ uint32, next uint64, err error) {
	size := uint64(len(data))
	idx := pos & (size - 1)
	length := binary.LittleEndian.Uint32(data[idx:])
	if length == padLength {
		skip := size - idx
		if skip >= wp-pos {
			return 0, 0, 0, 0, fmt.Errorf("%w: padding at position %d runs to or past the write position", ErrCorrupt, pos)
		}
		pos += skip
		idx = 0
		length = binary.LittleEndian.Uint32(data[idx:])
	}
	span := align8(recordHeader + uint64(length))
	if uint64(length) > size/2-recordHeader || span > size-idx || span > wp-pos {
		return 0, 0, 0, 0, fmt.Errorf("%w: record of %d bytes at position %d does not fit", ErrCorrupt, length, pos)
	}
	return idx + recordHeader, uint64(length), binary.LittleEndian.Uint32(data[idx+4:]), pos + span, nil
}

// parseSPSCFast is parseSPSCAt's common case, small enough to be inlined in the reader's
// loops: a record with no padding before it, whose header (one 8-byte load) passes
// parseSPSCAt's checks; maxLen is SPSCMaxMessage of the region. ok is false for anything
// else (nothing published, padding, a bad header), which parseSPSCAt then handles (after a
// reload of wp if pos == wp).
func parseSPSCFast(data []byte, pos, wp, maxLen uint64) (start, n uint64, typ uint32, next uint64, ok bool) {
	idx := pos & uint64(len(data)-1)
	b := data[idx:]
	if len(b) < recordHeader {
		return // never for a checked position
	}
	h := binary.LittleEndian.Uint64(b)
	n = h & 0xFFFFFFFF
	span := (recordHeader + 7 + n) &^ 7
	if n > maxLen || span > uint64(len(b)) || span > wp-pos {
		return
	}
	return idx + recordHeader, n, uint32(h >> 32), pos + span, true
}

// checkSPSCPositions checks a write and a read position read from shared memory: a correct
// ring keeps both 8-byte aligned (every record span is) and the writer at most a ring ahead.
func checkSPSCPositions(wp, rp, size uint64) error {
	if wp%recordHeader != 0 || rp%recordHeader != 0 {
		return fmt.Errorf("%w: position not 8-byte aligned (write %d, read %d)", ErrCorrupt, wp, rp)
	}
	if wp-rp > size {
		return fmt.Errorf("%w: write position %d is not within a ring of read position %d", ErrCorrupt, wp, rp)
	}
	return nil
}

// putSPSCHeader writes a record header at offset idx.
func putSPSCHeader(data []byte, idx uint64, typ uint32, n int) {
	binary.LittleEndian.PutUint64(data[idx:], uint64(uint32(n))|uint64(typ)<<32) // one store
}

// putSPSCPadding marks the bytes from offset idx to the end of the region as padding.
func putSPSCPadding(data []byte, idx uint64) {
	binary.LittleEndian.PutUint32(data[idx:], padLength)
}
