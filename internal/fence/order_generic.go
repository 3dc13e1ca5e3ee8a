//go:build (!amd64 && !arm64) || race

package fence

import "sync/atomic"

var orderWord uint32

// A read-modify-write is a full fence in Go's memory model, and the race detector sees it.
func loadLoad() { atomic.AddUint32(&orderWord, 0) }

func storeStore() { atomic.AddUint32(&orderWord, 0) }
