package ring

import (
	"sync/atomic"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// SpaceWaiters is the mask of processes with a writer marked asleep.
func SpaceWaiters(seg *shm.Segment) uint64 {
	return atomic.LoadUint64(layout.Uint64(kindHeader(seg), offSpaceWaiter))
}
