// Package layout holds the byte layout of a shmq segment, version 2.
//
// Every offset here is part of the on-disk (on-tmpfs) format: it is fixed, independent of
// the CPU architecture, and asserted at compile time below. Changing any of them is a new
// major layout version. Multi-byte descriptor fields are little-endian; shared words are
// accessed with sync/atomic in the machine's byte order, and shmq supports only
// little-endian machines (amd64, arm64), which Open checks.
//
// The file is:
//
//	0      descriptor (128 bytes, immutable after creation, CRC32-C protected)
//	0      role lock bytes, MaxRoles of them, overlaying the descriptor: they are only ever
//	       locked with F_OFD_SETLK (advisory), never read or written as roles
//	4096   peer table, PeerCount entries of PeerEntrySize bytes (ends at 20480)
//	32768  kind header (KindHeaderSize bytes), owned by the segment's kind (package ring);
//	       zero at creation, never read or written by package shm
//	65536  data region (DataOffset), a power of two in size
//
// Version 1 had hot blocks after the descriptor and a 32 KiB header; version 2 moved
// everything a ring owns into the kind header, so that package shm knows nothing of rings.
package layout

// Descriptor field offsets. The descriptor is written once, before the segment gets its
// name, and never changes afterwards.
const (
	OffMagic          = 0   // [8]byte Magic
	OffVersionMajor   = 8   // uint16
	OffVersionMinor   = 10  // uint16
	OffKind           = 12  // uint32, non-zero; its meaning belongs to the layer above shm
	OffFlags          = 16  // uint64, reserved, zero in version 2.0
	OffHeaderSize     = 24  // uint64, == DataOffset
	OffDataOffset     = 32  // uint64
	OffDataSize       = 40  // uint64, power of two
	OffPeerTable      = 48  // uint64
	OffPeerCount      = 56  // uint32
	OffPeerEntrySize  = 60  // uint32
	OffKindHeader     = 64  // uint64
	OffKindHeaderSize = 72  // uint64
	OffParam0         = 80  // uint64, the kind's own parameter, opaque to shm
	OffParam1         = 88  // uint64, likewise
	OffCreatorPID     = 96  // uint32; bytes 100..104 are zero
	OffCreatedNanos   = 104 // int64, Unix nanoseconds
	OffReserved       = 112 // zero up to OffChecksum
	OffChecksum       = 124 // uint32, CRC32-C (Castagnoli) of bytes [0, OffChecksum)
	DescriptorSize    = 128
)

// Magic opens every segment file.
const Magic = "SHMQSEG\x00"

// Layout version written by this code. Readers accept any minor version of the same major.
const (
	VersionMajor = 2
	VersionMinor = 0
)

// Role lock bytes: an exclusive role r is held by the open file description that holds an
// OFD write lock on byte RoleLockOffset+r. The bytes overlay the descriptor; locks are
// advisory, so the bytes themselves are never accessed through a role.
const (
	RoleLockOffset = 0
	MaxRoles       = 128
)

// Peer table: PeerCount entries. Whoever holds the OFD write lock on an entry's first byte
// owns the entry; the kernel drops the lock when the owner dies.
const (
	PeerTableOffset = 4096
	PeerEntrySize   = 256
	PeerCount       = 64
)

// Peer entry field offsets, relative to the entry. Bytes [0, PeerUserOffset) belong to
// package shm; bytes [PeerUserOffset, PeerEntrySize) belong to the layer above (claims,
// waiting marks, counters) and are zeroed when an entry is claimed.
const (
	PeerOffState = 0 // uint32: PeerFree or PeerAttached; written only by the owner. Its first byte is the entry's lock byte.
	// PeerOffHold is a uint32: non-zero while the owner holds something a live peer must
	// repair if the owner dies. An entry whose owner is dead and whose hold is set is never
	// reused; the repairer clears the hold (compare-and-swap 1 -> 0).
	PeerOffHold       = 4
	PeerOffPID        = 8  // uint32
	PeerOffStartTicks = 16 // uint64, process start time in clock ticks since boot (/proc/PID/stat)
	PeerOffAttachNano = 24 // int64, Unix nanoseconds
	PeerUserOffset    = 64
	PeerUserSize      = PeerEntrySize - PeerUserOffset
)

// Peer entry states.
const (
	PeerFree     = 0
	PeerAttached = 1
)

// PeerOffset returns the file offset of peer entry i.
func PeerOffset(i int) int { return PeerTableOffset + i*PeerEntrySize }

// Kind header: the segment's kind (package ring) lays out its own words here.
const (
	KindHeaderOffset = 32768
	KindHeaderSize   = 32768
)

// DataOffset is where the data region starts: a multiple of every page size Linux uses on
// amd64 and arm64 (4, 16 and 64 KiB).
const DataOffset = 65536

// Limits of the data region.
const (
	MinDataSize = 4096
	MaxDataSize = 1 << 40
)

// Compile-time assertions: each pair of lines fails to compile if the equality it names breaks.
var (
	_ [OffChecksum + 4 - DescriptorSize]struct{}
	_ [DescriptorSize - OffChecksum - 4]struct{}
	_ [OffReserved - OffCreatedNanos - 8]struct{}
	_ [OffCreatedNanos + 8 - OffReserved]struct{}
	_ [OffCreatedNanos - OffCreatorPID - 8]struct{}
	_ [OffCreatorPID + 8 - OffCreatedNanos]struct{}
	_ [OffParam1 - OffParam0 - 8]struct{}
	_ [OffParam0 + 8 - OffParam1]struct{}
	_ [OffKindHeaderSize - OffKindHeader - 8]struct{}
	_ [OffKindHeader + 8 - OffKindHeaderSize]struct{}

	_ [RoleLockOffset + MaxRoles - DescriptorSize]struct{} // role bytes overlay the descriptor exactly
	_ [DescriptorSize - RoleLockOffset - MaxRoles]struct{}
	_ [PeerTableOffset - 4096]struct{}
	_ [4096 - PeerTableOffset]struct{}
	_ [PeerTableOffset + PeerCount*PeerEntrySize - 20480]struct{} // peer table ends at 20480
	_ [20480 - PeerTableOffset - PeerCount*PeerEntrySize]struct{}
	_ [KindHeaderOffset - PeerTableOffset - PeerCount*PeerEntrySize]struct{} // no overlap
	_ [KindHeaderOffset - 32768]struct{}
	_ [32768 - KindHeaderOffset]struct{}
	_ [KindHeaderOffset + KindHeaderSize - DataOffset]struct{} // kind header ends at the data
	_ [DataOffset - KindHeaderOffset - KindHeaderSize]struct{}
	_ [DataOffset - 65536]struct{}
	_ [65536 - DataOffset]struct{}
	_ [PeerEntrySize - PeerUserOffset - 192]struct{}
	_ [192 + PeerUserOffset - PeerEntrySize]struct{}
	_ [PeerUserOffset - PeerOffAttachNano - 8]struct{} // shm's fields fit before the user words
)
