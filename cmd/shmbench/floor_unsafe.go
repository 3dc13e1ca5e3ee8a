//go:build linux

package main

import (
	"sync/atomic"
	"unsafe"
)

// The floor transport's shared memory (a memfd the parent makes and passes to both
// children as file 3), one word per 128-byte block so that no two words, and no word and
// the data, share a cache line or an adjacent-line prefetch pair:
//
//	throughput, latency, idle (a ring of fixed-size records):
//	  [0, 8)       written: records published, ever (writer stores, reader loads)
//	  [128, 136)   read: records consumed, ever (reader stores, writer loads)
//	  [256, 264)   closed: 1 once the writer published its last record (writer stores once)
//	  [512, ...)   capacity records of size bytes each, record i at 512 + (i % capacity) * size
//	pingpong:
//	  [0, 8)       ping: the pinger's sequence number, floorEnd at the end (pinger stores)
//	  [128, 136)   pong: the echoer's copy of the last ping it saw (echoer stores)
//
// Both processes are shmbench and trust each other: nothing read here is validated beyond
// the message checksum. Go's atomics are sequentially consistent, which is all the
// ordering below relies on.
const (
	floorWritten = 0
	floorRead    = 128
	floorClosed  = 256
	floorData    = 512
	floorPing    = 0
	floorPong    = 128
)

// floorWord returns the uint64 at off in mem.
//
// Correctness: mem is a MAP_SHARED mapping, page aligned, at least floorData bytes long
// (checked by mapFloor), and every off above is a multiple of 8 below floorData, so the
// pointer is aligned and inside the mapping for as long as the mapping lives (the child's
// whole life: it is never unmapped).
func floorWord(mem []byte, off int) *uint64 {
	return (*uint64)(unsafe.Pointer(&mem[off]))
}

// publish stores the writer's position after the records below it were written: the
// reader's load in loadWritten that sees it also sees those records (a store before an
// atomic store synchronizes before any load that observes it).
func (f *floorRing) publish(pos uint64) { atomic.StoreUint64(f.written, pos) }

// loadWritten pairs with publish: the records below the position it returns are complete.
func (f *floorRing) loadWritten() uint64 { return atomic.LoadUint64(f.written) }

// release stores the reader's position after it copied the records below it out: the
// writer's load in loadRead that sees it may overwrite them.
func (f *floorRing) release(pos uint64) { atomic.StoreUint64(f.read, pos) }

// loadRead pairs with release: the records below the position it returns are free.
func (f *floorRing) loadRead() uint64 { return atomic.LoadUint64(f.read) }

// close marks the end of the stream, after the writer's last publish: a reader whose
// loadClosed sees it then loads the final write position.
func (f *floorRing) closeStream() { atomic.StoreUint64(f.closed, 1) }

// loadClosed pairs with closeStream; the reader loads it before loadWritten, so a reader
// that sees the stream closed and the ring empty has read everything.
func (f *floorRing) loadClosed() bool { return atomic.LoadUint64(f.closed) != 0 }

// storeWord and loadWord are the ping-pong's two words: each side stores its word (the
// pinger ping, the echoer pong) and spins on a load of the other's. They pair with each
// other and carry nothing but the word.
func storeWord(w *uint64, v uint64) { atomic.StoreUint64(w, v) }
func loadWord(w *uint64) uint64     { return atomic.LoadUint64(w) }
