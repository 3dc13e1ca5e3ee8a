// Package layout holds the byte layout of a shmq segment, version 1.
//
// Every offset here is part of the on-disk (on-tmpfs) format: it is fixed, independent of
// the CPU architecture, and asserted at compile time below. Changing any of them is a new
// major layout version. Multi-byte descriptor fields are little-endian; hot words are
// accessed with sync/atomic in the machine's byte order, and shmq supports only
// little-endian machines (amd64, arm64), which Open checks through the descriptor.
//
// The file is:
//
//	0      descriptor (128 bytes, immutable after creation, CRC32-C protected)
//	128    hot blocks, BlockCount blocks of BlockSize bytes, each owned by one side
//	3968   role lock bytes (never read or written, only locked with F_OFD_SETLK)
//	4096   peer table, PeerCount entries of PeerEntrySize bytes
//	32768  data region (DataOffset), a power of two in size
package layout

// Descriptor field offsets. The descriptor is written once, before the segment gets its
// name, and never changes afterwards.
const (
	OffMagic         = 0   // [8]byte Magic
	OffVersionMajor  = 8   // uint16
	OffVersionMinor  = 10  // uint16
	OffKind          = 12  // uint32
	OffFlags         = 16  // uint64, reserved, zero in version 1.0
	OffHeaderSize    = 24  // uint64, == DataOffset in version 1
	OffDataOffset    = 32  // uint64
	OffDataSize      = 40  // uint64, power of two
	OffSlotSize      = 48  // uint32, MPMC only, power of two; 0 for SPSC
	OffPeerCount     = 52  // uint32
	OffSlotCount     = 56  // uint64, DataSize / SlotSize for MPMC; 0 for SPSC
	OffPeerTable     = 64  // uint64
	OffPeerEntrySize = 72  // uint32
	OffCreatorPID    = 76  // uint32
	OffCreatedNanos  = 80  // int64, Unix nanoseconds
	OffReserved      = 88  // zero up to OffChecksum
	OffChecksum      = 124 // uint32, CRC32-C (Castagnoli) of bytes [0, OffChecksum)
	DescriptorSize   = 128
)

// Magic opens every segment file.
const Magic = "SHMQSEG\x00"

// Layout version written by this code. Readers accept any minor version of the same major.
const (
	VersionMajor = 1
	VersionMinor = 0
)

// Hot blocks: each is BlockSize bytes (two cache lines, so that adjacent-line prefetching
// never makes two writers share a line). Which side owns which block is defined by the ring
// kind; the segment only reserves them.
const (
	BlockSize    = 128
	BlocksOffset = DescriptorSize
	BlockCount   = 30
)

// BlockOffset returns the file offset of hot block i.
func BlockOffset(i int) int { return BlocksOffset + i*BlockSize }

// Role lock bytes: an exclusive role r is held by the process that holds an OFD write lock
// on byte RoleLockOffset+r. The bytes themselves are never accessed.
const (
	RoleLockOffset = BlocksOffset + BlockCount*BlockSize // 3968
	MaxRoles       = 128
)

// Peer table: PeerCount entries. Whoever holds the OFD write lock on an entry's first byte
// owns the entry; the kernel drops the lock when the owner dies.
const (
	PeerTableOffset = RoleLockOffset + MaxRoles // 4096
	PeerEntrySize   = 256
	PeerCount       = 64
)

// Peer entry field offsets, relative to the entry. Bytes [0, PeerUserOffset) belong to
// package shm; bytes [PeerUserOffset, PeerEntrySize) belong to the ring that uses the
// segment (claims, waiting marks, counters) and are zeroed when an entry is claimed.
const (
	PeerOffState      = 0  // uint32: PeerFree or PeerAttached; written only by the owner
	PeerOffRole       = 4  // uint32
	PeerOffPID        = 8  // uint32
	PeerOffStartTicks = 16 // uint64, process start time in clock ticks since boot (/proc/PID/stat)
	PeerOffAttachNano = 24 // int64, Unix nanoseconds
	PeerUserOffset    = 64
	PeerUserSize      = PeerEntrySize - PeerUserOffset
	// PeerOffClaim is the first word of the ring's part: a non-zero value is work a dead
	// owner left unfinished (a claimed slot). Attach never reuses a dead entry whose claim
	// is set; the ring clears it when it repairs the claim.
	PeerOffClaim = PeerUserOffset
)

// Peer entry states.
const (
	PeerFree     = 0
	PeerAttached = 1
)

// PeerOffset returns the file offset of peer entry i.
func PeerOffset(i int) int { return PeerTableOffset + i*PeerEntrySize }

// DataOffset is where the data region starts: a multiple of every page size Linux uses on
// amd64 and arm64 (4, 16 and 64 KiB would need 65536; 32 KiB covers 4 and 16 KiB pages and
// Open refuses a machine whose page size does not divide it).
const DataOffset = 32768

// Limits of the data region.
const (
	MinDataSize = 4096
	MaxDataSize = 1 << 40
)

// Segment kinds.
const (
	KindSPSC = 1
	KindMPMC = 2
)

// Compile-time assertions: each line fails to compile if the equality it names breaks.
var (
	_ [OffChecksum + 4 - DescriptorSize]struct{}
	_ [DescriptorSize - OffChecksum - 4]struct{}
	_ [RoleLockOffset - 3968]struct{}
	_ [3968 - RoleLockOffset]struct{}
	_ [PeerTableOffset - 4096]struct{}
	_ [4096 - PeerTableOffset]struct{}
	_ [DataOffset - PeerTableOffset - PeerCount*PeerEntrySize]struct{} // peer table fits
	_ [PeerEntrySize - PeerUserOffset - 192]struct{}
	_ [192 + PeerUserOffset - PeerEntrySize]struct{}
	_ [OffReserved - OffCreatedNanos - 8]struct{}
	_ [OffCreatedNanos + 8 - OffReserved]struct{}
)
