package ring

import "github.com/shmq/shmq/internal/layout"

// Which hot block holds what. Each block is written by one side only (except the waiter
// counts, written by a side only while it goes to sleep or wakes up), so a busy writer and
// a busy reader never write the same cache line.
const (
	// offWritePos: SPSC published write position / MPMC claim position. uint64.
	// Written by the writer(s); read by readers and shmctl.
	offWritePos = 0*layout.BlockSize + layout.BlocksOffset
	// offReadPos: SPSC released read position / MPMC read claim position. uint64.
	offReadPos = 1*layout.BlockSize + layout.BlocksOffset

	// Eventcount "data available": readers sleep on the seq word, the writer bumps it.
	// The waiters word is a bit mask over peer-table indexes: one atomic OR both marks a
	// sleeper and counts it, so a sleeper that dies leaves exactly its own bit, which a
	// live peer can find (the entry's lock is free) and clear.
	offDataSeq     = 2*layout.BlockSize + layout.BlocksOffset      // uint32 futex word
	offDataWaiters = 2*layout.BlockSize + layout.BlocksOffset + 64 // uint64 mask of readers asleep

	// Eventcount "space available": writers sleep on it, readers bump it.
	offSpaceSeq     = 3*layout.BlockSize + layout.BlocksOffset
	offSpaceWaiters = 3*layout.BlockSize + layout.BlocksOffset + 64 // uint64 mask of writers asleep

	// Control block.
	offWriterState = 4*layout.BlockSize + layout.BlocksOffset      // uint32, writerNone/Attached/Closed
	offReaderState = 4*layout.BlockSize + layout.BlocksOffset + 4  // uint32, readerNone/Attached
	offInitialized = 4*layout.BlockSize + layout.BlocksOffset + 8  // uint32, 1 once positions are set
	offStartPos    = 4*layout.BlockSize + layout.BlocksOffset + 16 // uint64, first position ever used

	// Counters of peers that detached: per-peer counters are folded in here on Close.
	offRetiredWriter = 5*layout.BlockSize + layout.BlocksOffset
	offRetiredReader = 6*layout.BlockSize + layout.BlocksOffset
)

// Writer states in offWriterState.
const (
	writerNone     = 0 // no writer has attached yet
	writerAttached = 1 // a writer attached; if its role lock is free, it died
	writerClosed   = 2 // the last writer closed cleanly: end of stream until a new one attaches
)

// Reader states in offReaderState.
const (
	readerNone     = 0
	readerAttached = 1
)

// Peer words (the ring's part of a peer-table entry, layout.PeerUserSize bytes).
const (
	pwClaim    = layout.PeerOffClaim - layout.PeerUserOffset // uint64: MPMC lowest position claimed + 1, 0 when none
	pwCounters = 8                                           // counters, numCounters uint64s
)

// Counter indexes, in the peer words at pwCounters and in the retired blocks.
const (
	ctrMessages   = iota // messages written (writer) or read (reader)
	ctrBytes             // payload bytes
	ctrFull              // writer found the ring full
	ctrEmpty             // reader found the ring empty
	ctrFutexWaits        // sleeps in futex.Wait
	ctrFutexWakes        // futex.Wake calls made for the other side
	ctrDrops             // MPMC slots skipped for a dead writer, SPSC records lost (always 0)
	ctrLateWakes         // futex waits that timed out although the condition already held: a lost wake-up
	numCounters
)

var _ [layout.BlockSize - numCounters*8]struct{}                 // retired counters fit a block
var _ [layout.PeerUserSize - pwCounters - numCounters*8]struct{} // counters fit the peer words

var _ [layout.PeerCount - 64]struct{} // one waiter bit per peer entry
var _ [64 - layout.PeerCount]struct{}
