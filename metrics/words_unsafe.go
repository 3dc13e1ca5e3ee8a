package metrics

import "unsafe"

// int64s returns the n int64 words at mem[off:], for sync/atomic: a histogram's counts.
//
// Correctness: mem is a mapping that starts on a page boundary and off is a multiple of
// blockSize (layoutOf), so every word is 8-byte aligned; the mapping is not Go heap memory,
// so the garbage collector neither moves nor scans it, and the slice stays valid while the
// mapping does (see region). off and n come from layoutOf, checked against len(mem) when
// the set was opened, so a bad range is a bug here and panics.
func int64s(mem []byte, off, n int) []int64 {
	if off < 0 || n < 0 || off+n*8 > len(mem) || uintptr(unsafe.Pointer(unsafe.SliceData(mem)))%8 != 0 || off%8 != 0 {
		panic("metrics: misaligned or out-of-range counts")
	}
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*int64)(unsafe.Pointer(&mem[off])), n)
}
