//go:build !linux

package fence

import "sync/atomic"

const asymmetric = false

var fenceWord uint32

func heavy() { atomic.AddUint32(&fenceWord, 1) }

func storeSeqCst32(addr *uint32, v uint32) { atomic.StoreUint32(addr, v) }

func storeSeqCst64(addr *uint64, v uint64) { atomic.StoreUint64(addr, v) }
