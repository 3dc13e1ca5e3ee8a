// Package fence gives an asymmetric store-load fence: a light side that costs no atomic
// read-modify-write, for a path taken per message, and a heavy side, taken rarely, that
// makes the light side's earlier stores visible before the heavy side reads.
//
// The pattern it serves (Dekker's, as in a close that must wait for a running call):
//
//	light (hot):  StoreRelease32(&busy, 1); if closed.Load() { ... }   ... StoreRelease32(&busy, 0)
//	heavy (rare): closed.Store(true); Heavy(); for atomic.LoadUint32(&busy) != 0 { ... }
//
// Either the light side's load sees closed, or the heavy side's load (after Heavy) sees
// busy = 1. On Linux, Heavy is membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): every thread
// of this process that is running executes a full memory barrier before it returns, and a
// thread that is not running went through a context switch, itself a full barrier. Where
// that is not available, Light reports false and StoreRelease32 callers must use a
// sequentially consistent store (atomic.StoreUint32) instead; StoreRelease32 then does so
// itself.
package fence

// StoreRelease32 stores v at addr with release ordering and no read-modify-write: a plain
// MOV on amd64, STLR on arm64, a sequentially consistent store elsewhere and wherever the
// heavy side is not available. Loads of addr by other goroutines must use sync/atomic. It is
// also a compiler barrier: the compiler neither moves memory accesses across the call nor
// drops the store.
func StoreRelease32(addr *uint32, v uint32) {
	if !asymmetric {
		storeSeqCst32(addr, v)
		return
	}
	storeRelease32(addr, v)
}

// StoreRelease64 is StoreRelease32 for a 64-bit word (8-byte aligned).
func StoreRelease64(addr *uint64, v uint64) {
	if !asymmetric {
		storeSeqCst64(addr, v)
		return
	}
	storeRelease64(addr, v)
}

// Asymmetric reports whether Heavy is a real asymmetric fence here. When it is false,
// StoreRelease32 is sequentially consistent and Heavy is a plain full fence, which together
// are still correct, just not cheaper on the light side.
func Asymmetric() bool { return asymmetric }

// Heavy makes every store that a goroutine of this process issued through StoreRelease32
// before this call visible to loads this goroutine makes after it returns. It costs a
// system call (a few microseconds): use it on rare paths only.
func Heavy() { heavy() }
