package shm

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shmq/shmq/internal/layout"
)

// Kind says how a segment's data region and kind header are organised. Its values belong to
// the layer above shm (package ring defines its kinds and registers their names with
// RegisterKind); shm only stores the kind and refuses 0.
type Kind uint32

var kinds struct {
	sync.RWMutex
	names  map[Kind]string
	byName map[string]Kind
}

// RegisterKind names k for Kind.String and ParseKind. Call it from an init function of the
// package that defines the kind; it is safe for concurrent use but meant for start-up.
// It panics if k is 0, name is empty, or k or name is registered already: each is a bug of
// the caller.
func RegisterKind(k Kind, name string) {
	if k == 0 {
		panic("shm: RegisterKind with kind 0")
	}
	if name == "" {
		panic(fmt.Sprintf("shm: RegisterKind(%d) with an empty name", uint32(k)))
	}
	kinds.Lock()
	defer kinds.Unlock()
	if old, dup := kinds.names[k]; dup {
		panic(fmt.Sprintf("shm: kind %d registered twice (%q, then %q)", uint32(k), old, name))
	}
	if old, dup := kinds.byName[name]; dup {
		panic(fmt.Sprintf("shm: kind name %q registered twice (kind %d, then %d)", name, uint32(old), uint32(k)))
	}
	if kinds.names == nil {
		kinds.names, kinds.byName = map[Kind]string{}, map[string]Kind{}
	}
	kinds.names[k], kinds.byName[name] = name, k
}

// String returns the name registered for k, or "kind(N)" when there is none.
func (k Kind) String() string {
	kinds.RLock()
	name, ok := kinds.names[k]
	kinds.RUnlock()
	if ok {
		return name
	}
	return fmt.Sprintf("kind(%d)", uint32(k))
}

// ParseKind is the inverse of Kind.String: it returns the kind registered under name, or N
// for "kind(N)" with N non-zero (so that any String round-trips). Anything else is an error
// wrapping ErrInvalidSpec that lists the registered names.
func ParseKind(name string) (Kind, error) {
	kinds.RLock()
	k, ok := kinds.byName[name]
	known := make([]string, 0, len(kinds.byName))
	for n := range kinds.byName {
		known = append(known, n)
	}
	kinds.RUnlock()
	if ok {
		return k, nil
	}
	if v, ok := strings.CutPrefix(name, "kind("); ok {
		if v, ok := strings.CutSuffix(v, ")"); ok {
			if n, err := strconv.ParseUint(v, 10, 32); err == nil && n != 0 {
				return Kind(n), nil
			}
		}
	}
	slices.Sort(known)
	return 0, fmt.Errorf("%w: unknown kind %q (registered: %s)", ErrInvalidSpec, name, strings.Join(known, ", "))
}

// Spec is what Create lays out.
type Spec struct {
	// Kind is the segment's kind; it must not be 0. shm stores it and does not interpret it.
	Kind Kind
	// DataSize is the size of the data region: a power of two from 4 KiB to 1 TiB.
	DataSize uint64
	// Params are the kind's own parameters (a ring's slot size, say), stored in the
	// descriptor and opaque to shm.
	Params [2]uint64
}

func (s Spec) validate() error {
	if s.Kind == 0 {
		return fmt.Errorf("%w: kind 0", ErrInvalidSpec)
	}
	if s.DataSize < layout.MinDataSize || s.DataSize > layout.MaxDataSize || !isPow2(s.DataSize) {
		return fmt.Errorf("%w: data size %d is not a power of two from %d to %d",
			ErrInvalidSpec, s.DataSize, layout.MinDataSize, uint64(layout.MaxDataSize))
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
	VersionMajor     uint16
	VersionMinor     uint16
	Kind             Kind
	Flags            uint64 // zero in layout 2.0
	HeaderSize       uint64 // bytes before the data region, == DataOffset
	DataOffset       uint64
	DataSize         uint64
	PeerTableOffset  uint64
	PeerCount        uint32
	PeerEntrySize    uint32
	KindHeaderOffset uint64 // the kind's header inside Segment.Header
	KindHeaderSize   uint64
	Params           [2]uint64 // the kind's parameters, opaque to shm
	CreatorPID       uint32
	Created          time.Time
}

// FileSize is the length the segment file must have.
func (d Descriptor) FileSize() uint64 { return d.DataOffset + d.DataSize }

// newDescriptor lays out spec in this code's layout version.
func newDescriptor(spec Spec, pid int, now time.Time) Descriptor {
	return Descriptor{
		VersionMajor:     layout.VersionMajor,
		VersionMinor:     layout.VersionMinor,
		Kind:             spec.Kind,
		HeaderSize:       layout.DataOffset,
		DataOffset:       layout.DataOffset,
		DataSize:         spec.DataSize,
		PeerTableOffset:  layout.PeerTableOffset,
		PeerCount:        layout.PeerCount,
		PeerEntrySize:    layout.PeerEntrySize,
		KindHeaderOffset: layout.KindHeaderOffset,
		KindHeaderSize:   layout.KindHeaderSize,
		Params:           spec.Params,
		CreatorPID:       uint32(pid),
		Created:          time.Unix(0, now.UnixNano()),
	}
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
	le.PutUint64(b[layout.OffPeerTable:], d.PeerTableOffset)
	le.PutUint32(b[layout.OffPeerCount:], d.PeerCount)
	le.PutUint32(b[layout.OffPeerEntrySize:], d.PeerEntrySize)
	le.PutUint64(b[layout.OffKindHeader:], d.KindHeaderOffset)
	le.PutUint64(b[layout.OffKindHeaderSize:], d.KindHeaderSize)
	le.PutUint64(b[layout.OffParam0:], d.Params[0])
	le.PutUint64(b[layout.OffParam1:], d.Params[1])
	le.PutUint32(b[layout.OffCreatorPID:], d.CreatorPID)
	le.PutUint64(b[layout.OffCreatedNanos:], uint64(d.Created.UnixNano()))
	le.PutUint32(b[layout.OffChecksum:], crc32.Checksum(b[:layout.OffChecksum], castagnoli))
	return b, nil
}

// DecodeDescriptor validates the first bytes of a segment file and decodes them. Checks run
// in this order, each with its own error: bytes that do not match the magic (ErrNotSegment),
// fewer bytes than the magic (ErrTruncated: an empty file or a cut one), fewer bytes than a
// descriptor (ErrTruncated), major version (ErrVersion; a layout-1 file is refused so),
// checksum (ErrCorrupt), values that no valid layout has (ErrCorrupt), kind 0 (ErrKind).
// A non-zero kind shm has no name for is accepted: the layer above refuses kinds it does
// not know. It does not know the file's length; Open checks that separately.
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
		VersionMajor:     le.Uint16(raw[layout.OffVersionMajor:]),
		VersionMinor:     le.Uint16(raw[layout.OffVersionMinor:]),
		Kind:             Kind(le.Uint32(raw[layout.OffKind:])),
		Flags:            le.Uint64(raw[layout.OffFlags:]),
		HeaderSize:       le.Uint64(raw[layout.OffHeaderSize:]),
		DataOffset:       le.Uint64(raw[layout.OffDataOffset:]),
		DataSize:         le.Uint64(raw[layout.OffDataSize:]),
		PeerTableOffset:  le.Uint64(raw[layout.OffPeerTable:]),
		PeerCount:        le.Uint32(raw[layout.OffPeerCount:]),
		PeerEntrySize:    le.Uint32(raw[layout.OffPeerEntrySize:]),
		KindHeaderOffset: le.Uint64(raw[layout.OffKindHeader:]),
		KindHeaderSize:   le.Uint64(raw[layout.OffKindHeaderSize:]),
		Params:           [2]uint64{le.Uint64(raw[layout.OffParam0:]), le.Uint64(raw[layout.OffParam1:])},
		CreatorPID:       le.Uint32(raw[layout.OffCreatorPID:]),
		Created:          time.Unix(0, int64(le.Uint64(raw[layout.OffCreatedNanos:]))),
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
// layout version 2 writes: such a file was crafted, and trusting it would map or index
// out of bounds.
func (d Descriptor) checkLayout() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
	switch {
	case d.HeaderSize != layout.DataOffset || d.DataOffset != layout.DataOffset:
		return bad("header size %d / data offset %d, layout 2 has %d", d.HeaderSize, d.DataOffset, layout.DataOffset)
	case d.PeerTableOffset != layout.PeerTableOffset || d.PeerEntrySize != layout.PeerEntrySize || d.PeerCount != layout.PeerCount:
		return bad("peer table %d entries of %d bytes at %d, layout 2 has %d of %d at %d",
			d.PeerCount, d.PeerEntrySize, d.PeerTableOffset, layout.PeerCount, layout.PeerEntrySize, layout.PeerTableOffset)
	case d.KindHeaderOffset != layout.KindHeaderOffset || d.KindHeaderSize != layout.KindHeaderSize:
		return bad("kind header of %d bytes at %d, layout 2 has %d at %d",
			d.KindHeaderSize, d.KindHeaderOffset, layout.KindHeaderSize, layout.KindHeaderOffset)
	case d.DataSize < layout.MinDataSize || d.DataSize > layout.MaxDataSize || !isPow2(d.DataSize):
		return bad("data size %d is not a power of two from %d to %d", d.DataSize, layout.MinDataSize, uint64(layout.MaxDataSize))
	case d.Kind == 0:
		return fmt.Errorf("%w: kind 0", ErrKind)
	}
	return nil
}
