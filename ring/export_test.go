package ring

import (
	"sync/atomic"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// SetPositions sets both positions of a ring no endpoint is attached to, so that tests can
// start near 2^64 and cross the wrap of the counters.
func SetPositions(seg *shm.Segment, pos uint64) {
	atomic.StoreUint64(layout.Uint64(seg.Header(), offWritePos), pos)
	atomic.StoreUint64(layout.Uint64(seg.Header(), offReadPos), pos)
}

// SetWritePos overwrites the published write position, as a broken peer would.
func SetWritePos(seg *shm.Segment, pos uint64) {
	atomic.StoreUint64(layout.Uint64(seg.Header(), offWritePos), pos)
}

// DataWaiters is the mask of readers marked asleep.
func DataWaiters(seg *shm.Segment) uint64 {
	return atomic.LoadUint64(layout.Uint64(seg.Header(), offDataWaiters))
}

// SetMPMCPositions sets both positions of an MPMC ring nobody is attached to, and every
// slot's sequence to match, so that tests can start near 2^64.
func SetMPMCPositions(seg *shm.Segment, pos uint64) {
	d := seg.Descriptor()
	mask := d.SlotCount - 1
	for i := uint64(0); i < d.SlotCount; i++ {
		first := pos + ((i - pos) & mask) // first position >= pos that lands in slot i
		slot := seg.Data()[i*uint64(d.SlotSize):]
		atomic.StoreUint64(layout.Uint64(slot, 0), first-i)
	}
	SetPositions(seg, pos)
}

// SetReadPos overwrites the released read position, as a broken peer would.
func SetReadPos(seg *shm.Segment, pos uint64) {
	atomic.StoreUint64(layout.Uint64(seg.Header(), offReadPos), pos)
}
