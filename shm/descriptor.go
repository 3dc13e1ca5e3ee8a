package shm

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
	"time"

	"github.com/shmq/shmq/internal/layout"
)

// Kind says how a segment's data region is organised.
type Kind uint32

// Segment kinds.
const (
	KindSPSC Kind = layout.KindSPSC // one writer, one reader, variable-length records
	KindMPMC Kind = layout.KindMPMC // many writers and readers, fixed slots
)

// String returns "spsc", "mpmc", or "kind(N)" for a kind this code does not know.
func (k Kind) String() string {
	switch k {
	case KindSPSC:
		return "spsc"
	case KindMPMC:
		return "mpmc"
	}
	return fmt.Sprintf("kind(%d)", uint32(k))
}

// ParseKind is the inverse of Kind.String for the known kinds.
func ParseKind(s string) (Kind, error) {
	switch s {
	case "spsc":
		return KindSPSC, nil
	case "mpmc":
		return KindMPMC, nil
	}
	return 0, fmt.Errorf("%w: unknown kind %q (want spsc or mpmc)", ErrInvalidSpec, s)
}

// MinSlotSize is the smallest MPMC slot: a slot header plus eight bytes of payload.
const MinSlotSize = 32

// Spec is what Create lays out.
type Spec struct {
	Kind Kind
	// DataSize is the size of the data region: a power of two from 4 KiB to 1 TiB.
	DataSize uint64
	// SlotSize is the MPMC slot size, a power of two from MinSlotSize to DataSize/2.
	// It must be 0 for SPSC.
	SlotSize uint32
}

func (s Spec) validate() error {
	if s.DataSize < layout.MinDataSize || s.DataSize > layout.MaxDataSize || !isPow2(s.DataSize) {
		return fmt.Errorf("%w: data size %d is not a power of two from %d to %d",
			ErrInvalidSpec, s.DataSize, layout.MinDataSize, uint64(layout.MaxDataSize))
	}
	switch s.Kind {
	case KindSPSC:
		if s.SlotSize != 0 {
			return fmt.Errorf("%w: spsc segments have no slot size", ErrInvalidSpec)
		}
	case KindMPMC:
		if s.SlotSize < MinSlotSize || !isPow2(uint64(s.SlotSize)) || uint64(s.SlotSize) > s.DataSize/2 {
			return fmt.Errorf("%w: slot size %d is not a power of two from %d to half the data size",
				ErrInvalidSpec, s.SlotSize, MinSlotSize)
		}
	default:
		return fmt.Errorf("%w: %v", ErrInvalidSpec, s.Kind)
	}
	return nil
}

func isPow2(x uint64) bool { return x != 0 && x&(x-1) == 0 }

// NextPow2 returns the smallest power of two >= x (1 for x == 0), or 0 if that overflows.
func NextPow2(x uint64) uint64 {
	if x <= 1 {
		return 1
	}
	n := bits.Len64(x - 1)
	if n >= 64 {
		return 0
	}
	return 1 << n
}

// Descriptor is the immutable header of a segment, decoded and validated once when the
// segment is opened. It is a plain Go value: nothing in it is read from shared memory again.
type Descriptor struct {
	VersionMajor    uint16
	VersionMinor    uint16
	Kind            Kind
	Flags           uint64
	HeaderSize      uint64
	DataOffset      uint64
	DataSize        uint64
	SlotSize        uint32
	SlotCount       uint64
	PeerCount       uint32
	PeerTableOffset uint64
	PeerEntrySize   uint32
	CreatorPID      uint32
	Created         time.Time
}

// FileSize is the length the segment file must have.
func (d Descriptor) FileSize() uint64 { return d.DataOffset + d.DataSize }

// newDescriptor lays out spec in this code's layout version.
func newDescriptor(spec Spec, pid int, now time.Time) Descriptor {
	d := Descriptor{
		VersionMajor:    layout.VersionMajor,
		VersionMinor:    layout.VersionMinor,
		Kind:            spec.Kind,
		HeaderSize:      layout.DataOffset,
		DataOffset:      layout.DataOffset,
		DataSize:        spec.DataSize,
		SlotSize:        spec.SlotSize,
		PeerCount:       layout.PeerCount,
		PeerTableOffset: layout.PeerTableOffset,
		PeerEntrySize:   layout.PeerEntrySize,
		CreatorPID:      uint32(pid),
		Created:         time.Unix(0, now.UnixNano()),
	}
	if spec.SlotSize != 0 {
		d.SlotCount = spec.DataSize / uint64(spec.SlotSize)
	}
	return d
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary encodes d as the DescriptorSize bytes that start a segment file, with its
// checksum. It never fails.
func (d Descriptor) MarshalBinary() ([]byte, error) {
	b := make([]byte, layout.DescriptorSize)
	le := binary.LittleEndian
	copy(b[layout.OffMagic:], layout.Magic)
	le.PutUint16(b[layout.OffVersionMajor:], d.VersionMajor)
	le.PutUint16(b[layout.OffVersionMinor:], d.VersionMinor)
	le.PutUint32(b[layout.OffKind:], uint32(d.Kind))
	le.PutUint64(b[layout.OffFlags:], d.Flags)
	le.PutUint64(b[layout.OffHeaderSize:], d.HeaderSize)
	le.PutUint64(b[layout.OffDataOffset:], d.DataOffset)
	le.PutUint64(b[layout.OffDataSize:], d.DataSize)
	le.PutUint32(b[layout.OffSlotSize:], d.SlotSize)
	le.PutUint32(b[layout.OffPeerCount:], d.PeerCount)
	le.PutUint64(b[layout.OffSlotCount:], d.SlotCount)
	le.PutUint64(b[layout.OffPeerTable:], d.PeerTableOffset)
	le.PutUint32(b[layout.OffPeerEntrySize:], d.PeerEntrySize)
	le.PutUint32(b[layout.OffCreatorPID:], d.CreatorPID)
	le.PutUint64(b[layout.OffCreatedNanos:], uint64(d.Created.UnixNano()))
	le.PutUint32(b[layout.OffChecksum:], crc32.Checksum(b[:layout.OffChecksum], castagnoli))
	return b, nil
}

// DecodeDescriptor validates the first bytes of a segment file and decodes them. Checks run
// in this order, each with its own error: bytes that do not match the magic (ErrNotSegment),
// fewer bytes than the magic (ErrTruncated: an empty file or a cut one), fewer bytes than a descriptor (ErrTruncated), major version (ErrVersion),
// checksum (ErrCorrupt), values that no valid layout has (ErrCorrupt), unknown kind
// (ErrKind). It does not know the file's length; Open checks that separately.
//
// b is read once; the result shares no memory with it.
func DecodeDescriptor(b []byte) (Descriptor, error) {
	head := b[:min(len(b), len(layout.Magic))]
	if string(head) != layout.Magic[:len(head)] {
		return Descriptor{}, fmt.Errorf("%w: bad magic %q", ErrNotSegment, head)
	}
	if len(b) < len(layout.Magic) {
		return Descriptor{}, fmt.Errorf("%w: %d bytes, shorter than the magic", ErrTruncated, len(b))
	}
	if len(b) < layout.DescriptorSize {
		return Descriptor{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte descriptor",
			ErrTruncated, len(b), layout.DescriptorSize)
	}
	var raw [layout.DescriptorSize]byte // one copy; every check below reads only this
	copy(raw[:], b)
	le := binary.LittleEndian
	d := Descriptor{
		VersionMajor:    le.Uint16(raw[layout.OffVersionMajor:]),
		VersionMinor:    le.Uint16(raw[layout.OffVersionMinor:]),
		Kind:            Kind(le.Uint32(raw[layout.OffKind:])),
		Flags:           le.Uint64(raw[layout.OffFlags:]),
		HeaderSize:      le.Uint64(raw[layout.OffHeaderSize:]),
		DataOffset:      le.Uint64(raw[layout.OffDataOffset:]),
		DataSize:        le.Uint64(raw[layout.OffDataSize:]),
		SlotSize:        le.Uint32(raw[layout.OffSlotSize:]),
		PeerCount:       le.Uint32(raw[layout.OffPeerCount:]),
		SlotCount:       le.Uint64(raw[layout.OffSlotCount:]),
		PeerTableOffset: le.Uint64(raw[layout.OffPeerTable:]),
		PeerEntrySize:   le.Uint32(raw[layout.OffPeerEntrySize:]),
		CreatorPID:      le.Uint32(raw[layout.OffCreatorPID:]),
		Created:         time.Unix(0, int64(le.Uint64(raw[layout.OffCreatedNanos:]))),
	}
	if d.VersionMajor != layout.VersionMajor {
		return Descriptor{}, fmt.Errorf("%w: layout %d.%d, this code reads %d.x",
			ErrVersion, d.VersionMajor, d.VersionMinor, layout.VersionMajor)
	}
	stored := le.Uint32(raw[layout.OffChecksum:])
	if sum := crc32.Checksum(raw[:layout.OffChecksum], castagnoli); sum != stored {
		return Descriptor{}, fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x)", ErrCorrupt, stored, sum)
	}
	if err := d.checkLayout(); err != nil {
		return Descriptor{}, err
	}
	return d, nil
}

// checkLayout refuses a descriptor whose checksum is right but whose values no creator of
// layout version 1 writes: such a file was crafted, and trusting it would map or index
// out of bounds.
func (d Descriptor) checkLayout() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
	switch {
	case d.HeaderSize != layout.DataOffset || d.DataOffset != layout.DataOffset:
		return bad("header size %d / data offset %d, layout 1 has %d", d.HeaderSize, d.DataOffset, layout.DataOffset)
	case d.PeerTableOffset != layout.PeerTableOffset || d.PeerEntrySize != layout.PeerEntrySize || d.PeerCount != layout.PeerCount:
		return bad("peer table %d entries of %d bytes at %d, layout 1 has %d of %d at %d",
			d.PeerCount, d.PeerEntrySize, d.PeerTableOffset, layout.PeerCount, layout.PeerEntrySize, layout.PeerTableOffset)
	case d.DataSize < layout.MinDataSize || d.DataSize > layout.MaxDataSize || !isPow2(d.DataSize):
		return bad("data size %d is not a power of two from %d to %d", d.DataSize, layout.MinDataSize, uint64(layout.MaxDataSize))
	}
	switch d.Kind {
	case KindSPSC:
		if d.SlotSize != 0 || d.SlotCount != 0 {
			return bad("spsc segment with slots (%d x %d)", d.SlotCount, d.SlotSize)
		}
	case KindMPMC:
		if d.SlotSize < MinSlotSize || !isPow2(uint64(d.SlotSize)) || uint64(d.SlotSize) > d.DataSize/2 ||
			d.SlotCount != d.DataSize/uint64(d.SlotSize) {
			return bad("mpmc slots %d x %d do not fit a %d-byte data region", d.SlotCount, d.SlotSize, d.DataSize)
		}
	default:
		return fmt.Errorf("%w: %v is not a kind this code knows", ErrKind, d.Kind)
	}
	return nil
}
