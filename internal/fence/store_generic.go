//go:build (!amd64 && !arm64) || race

package fence

import "sync/atomic"

// Under the race detector a sequentially consistent store stands in for the plain one, so
// that the detector sees the release that the hardware gives the plain store.
func storeRelease32(addr *uint32, v uint32) { atomic.StoreUint32(addr, v) }

func storeRelease64(addr *uint64, v uint64) { atomic.StoreUint64(addr, v) }
