package metrics

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// The metrics format: the one home of where a set keeps its schema and its values. Every
// offset here is part of the format, asserted at compile time below; changing one is a new
// formatVersion.
//
// A metrics segment is an shm segment of kind SegmentKind:
//
//	descriptor Params[0]   formatVersion
//	descriptor Params[1]   schema length in bytes (low 32 bits) | CRC32-C of the schema (high 32)
//	kind header +0         uint32 state: 0 while the creator writes the schema, stateReady after
//	data region +0         the schema (encodeSchema), immutable once ready
//	data region +valuesOff one block per series, in schema order (layoutOf):
//	                         counter:   uint64 at +0 of a 128-byte block
//	                         gauge:     int64 at +0 of a 128-byte block
//	                         histogram: a 128-byte block (uint64 out-of-range count at +0),
//	                                    then the HdrHistogram counts array, countsLen int64s
//	                                    in hdrhistogram-go's order, padded to 128 bytes
//
// The descriptor is checksummed and immutable (package shm), so the schema's length and CRC
// there make any later change to the schema bytes ErrCorrupt. Every value word is written
// only with atomic adds and stores, from any process; a 128-byte block per series keeps two
// series (and adjacent-line prefetching) from sharing a cache line.

// SegmentKind is the shm kind of a metrics segment, registered as "metrics". Its value
// spells "MET" in ASCII, as dlq's spells "DLQ", far from the small numbers of ring (1-3)
// and bus (16).
const SegmentKind shm.Kind = 0x4d4554

func init() { shm.RegisterKind(SegmentKind, "metrics") }

// formatVersion is the metrics format this code writes and reads (descriptor Params[0]);
// another value is ErrVersion.
const formatVersion = 1

const (
	paramVersion = 0
	paramSchema  = 1
)

// Kind header words.
const (
	offState   = 0 // uint32
	stateReady = 1
)

// blockSize is the unit of the value area: two cache lines.
const blockSize = 128

// Offsets inside a series' block.
const (
	offValue      = 0 // counter, gauge: the value
	offOutOfRange = 0 // histogram: values Record refused (negative, or beyond the range)
)

var (
	_ [layout.KindHeaderSize - 4]struct{} // the state word fits the kind header
	_ [-(offState % 4)]struct{}
	_ [blockSize - 8]struct{}
	_ [-(blockSize % 64)]struct{}
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// schemaParam packs the schema's length and checksum into Params[1].
func schemaParam(schema []byte) uint64 {
	return uint64(len(schema)) | uint64(crc32.Checksum(schema, castagnoli))<<32
}

// seriesLayout is where one series' values live in the data region.
type seriesLayout struct {
	off       int // the series' block
	countsOff int // histogram: its counts array
	geom      geometry
}

// layoutOf places the series of a checked schema whose encoding is schemaLen bytes, and
// returns the end of the value area: the data region must hold that many bytes.
func layoutOf(schema []Desc, geoms []geometry, schemaLen int) ([]seriesLayout, uint64) {
	out := make([]seriesLayout, len(schema))
	off := alignUp(uint64(schemaLen), blockSize)
	for i, d := range schema {
		out[i] = seriesLayout{off: int(off), geom: geoms[i]}
		off += blockSize
		if d.Type == TypeHistogram {
			out[i].countsOff = int(off)
			off += alignUp(uint64(geoms[i].countsLen)*8, blockSize)
		}
	}
	return out, off
}

func alignUp(x, a uint64) uint64 { return (x + a - 1) &^ (a - 1) }

// dataSizeFor is the data region a value area of end bytes needs: a power of two that shm
// accepts, or 0 if there is none.
func dataSizeFor(end uint64) uint64 {
	size := shm.NextPow2(max(end, layout.MinDataSize))
	if size == 0 || size > layout.MaxDataSize {
		return 0
	}
	return size
}

// Schema encoding, little-endian:
//
//	u32 number of series
//	per series: u8 type, u8 number of labels, str name, str help, str unit,
//	            per label: str key, str value,
//	            histogram only: i64 lowest, i64 highest, u8 digits
//
// where str is a u16 length and that many bytes. The encoding of a schema is canonical
// (labels sorted by key, nothing after the last series): decodeSchema accepts exactly the
// encodings encodeSchema writes.

// encodeSchema encodes a schema that checkSchema accepted.
func encodeSchema(schema []Desc) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(schema)))
	str := func(s string) { b = append(binary.LittleEndian.AppendUint16(b, uint16(len(s))), s...) }
	for _, d := range schema {
		b = append(b, byte(d.Type), byte(len(d.Labels)))
		str(d.Name)
		str(d.Help)
		str(d.Unit)
		for _, l := range d.Labels {
			str(l.Key)
			str(l.Value)
		}
		if d.Type == TypeHistogram {
			b = binary.LittleEndian.AppendUint64(b, uint64(d.Lowest))
			b = binary.LittleEndian.AppendUint64(b, uint64(d.Highest))
			b = append(b, byte(d.Digits))
		}
	}
	return b
}

var errShort = errors.New("schema ends inside a field")

// schemaReader reads a schema encoding; the first error sticks.
type schemaReader struct {
	b   []byte
	err error
}

func (r *schemaReader) take(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = errShort
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *schemaReader) u8() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *schemaReader) u16() uint16 {
	if p := r.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (r *schemaReader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (r *schemaReader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (r *schemaReader) str() string { return string(r.take(int(r.u16()))) }

// decodeSchema decodes and checks a stored schema. b is untrusted: anything but an encoding
// encodeSchema could have written from a schema checkSchema accepts is an error wrapping
// ErrCorrupt, and nothing in b can make it panic or allocate more than a small multiple of
// len(b). The result shares no memory with b.
func decodeSchema(b []byte) ([]Desc, []geometry, error) {
	bad := func(err error) ([]Desc, []geometry, error) {
		return nil, nil, fmt.Errorf("%w: schema: %w", ErrCorrupt, err)
	}
	r := &schemaReader{b: b}
	n := r.u32()
	if r.err == nil && (n == 0 || n > MaxSeries) {
		return bad(fmt.Errorf("%d series: want 1 to %d", n, MaxSeries))
	}
	// Each series takes at least 8 bytes, so n is also bounded by len(b) before allocating.
	if r.err == nil && uint64(n)*8 > uint64(len(r.b)) {
		return bad(errShort)
	}
	var schema []Desc
	if r.err == nil {
		schema = make([]Desc, 0, n)
	}
	for i := uint32(0); r.err == nil && i < n; i++ {
		d := Desc{Type: Type(r.u8())}
		nl := int(r.u8())
		d.Name, d.Help, d.Unit = r.str(), r.str(), r.str()
		if nl > MaxLabels {
			return bad(fmt.Errorf("series %d has %d labels, at most %d", i, nl, MaxLabels))
		}
		for range nl {
			d.Labels = append(d.Labels, Label{Key: r.str(), Value: r.str()})
		}
		if d.Type == TypeHistogram {
			lo, hi := r.u64(), r.u64()
			if lo > math.MaxInt64 || hi > math.MaxInt64 {
				return bad(fmt.Errorf("series %s: histogram range %d to %d", d.Name, lo, hi))
			}
			d.Lowest, d.Highest, d.Digits = int64(lo), int64(hi), int(r.u8())
		}
		schema = append(schema, d)
	}
	if r.err != nil {
		return bad(r.err)
	}
	if len(r.b) != 0 {
		return bad(fmt.Errorf("%d bytes after the last series", len(r.b)))
	}
	geoms, err := checkSchema(schema)
	if err != nil {
		return bad(err)
	}
	return schema, geoms, nil
}
