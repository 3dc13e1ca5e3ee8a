package dlq

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// An entry record, inside a slot after the slot header (format.go). Little-endian; offsets
// in bytes from the record's start. This file is the record format's one home.
//
//	 0  u32  CRC32-C (Castagnoli) of bytes [4, length)
//	 4  u32  length: recordHeader + origin + error + data
//	 8  u32  attempts
//	12  u32  ring record type the data travelled with
//	16  i64  dead-lettered at, Unix nanoseconds
//	24  u16  origin length (<= MaxOriginLen)
//	26  u16  error length (<= MaxErrorLen)
//	28  u32  data length
//	32       origin, error text, data
//
// The lengths must add up to the length field, and the length must fit the slot.
const (
	recOffCRC      = 0
	recOffLength   = 4
	recOffAttempts = 8
	recOffType     = 12
	recOffDeadAt   = 16
	recOffOrigin   = 24
	recOffErr      = 26
	recOffData     = 28
	recordHeader   = 32
)

// Limits of an entry's strings.
const (
	MaxOriginLen = 255  // bytes of Entry.Origin
	MaxErrorLen  = 1024 // bytes of Entry.Err kept; a longer error text is cut
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordSize is the bytes e takes in a slot (its error cut to MaxErrorLen).
func recordSize(e *Entry) int {
	return recordHeader + len(e.Origin) + min(len(e.Err), MaxErrorLen) + len(e.Data)
}

// putRecord encodes e into dst, which has room for recordSize(e) bytes.
func putRecord(dst []byte, e *Entry) {
	errText := e.Err[:min(len(e.Err), MaxErrorLen)]
	n := recordSize(e)
	le := binary.LittleEndian
	le.PutUint32(dst[recOffLength:], uint32(n))
	le.PutUint32(dst[recOffAttempts:], e.Attempts)
	le.PutUint32(dst[recOffType:], e.Type)
	le.PutUint64(dst[recOffDeadAt:], uint64(e.DeadAt.UnixNano()))
	le.PutUint16(dst[recOffOrigin:], uint16(len(e.Origin)))
	le.PutUint16(dst[recOffErr:], uint16(len(errText)))
	le.PutUint32(dst[recOffData:], uint32(len(e.Data)))
	p := recordHeader
	p += copy(dst[p:], e.Origin)
	p += copy(dst[p:], errText)
	copy(dst[p:], e.Data)
	le.PutUint32(dst[recOffCRC:], crc32.Checksum(dst[4:n], castagnoli))
}

// parseRecord decodes a record from b, a private copy of a slot's record area, into a new
// Entry whose slices do not alias b's. Every length is checked against b, then the CRC.
func parseRecord(b []byte) (Entry, error) {
	if len(b) < recordHeader {
		return Entry{}, fmt.Errorf("%w: record area of %d bytes", ErrCorrupt, len(b))
	}
	le := binary.LittleEndian
	n := int(le.Uint32(b[recOffLength:]))
	no, ne, nd := int(le.Uint16(b[recOffOrigin:])), int(le.Uint16(b[recOffErr:])), int(le.Uint32(b[recOffData:]))
	switch {
	case n < recordHeader || n > len(b):
		return Entry{}, fmt.Errorf("%w: record length %d, room %d", ErrCorrupt, n, len(b))
	case no > MaxOriginLen || ne > MaxErrorLen || recordHeader+no+ne+nd != n:
		return Entry{}, fmt.Errorf("%w: record lengths %d+%d+%d+%d do not make %d", ErrCorrupt, recordHeader, no, ne, nd, n)
	}
	if got, want := crc32.Checksum(b[4:n], castagnoli), le.Uint32(b[recOffCRC:]); got != want {
		return Entry{}, fmt.Errorf("%w: record checksum %08x, computed %08x", ErrCorrupt, want, got)
	}
	p := recordHeader
	e := Entry{
		Attempts: le.Uint32(b[recOffAttempts:]),
		Type:     le.Uint32(b[recOffType:]),
		DeadAt:   time.Unix(0, int64(le.Uint64(b[recOffDeadAt:]))),
		Origin:   string(b[p : p+no]),
		Err:      string(b[p+no : p+no+ne]),
		Data:     append([]byte(nil), b[p+no+ne:n]...),
	}
	return e, nil
}
