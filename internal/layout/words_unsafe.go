package layout

import "unsafe"

// Uint32 returns a pointer to the 32-bit word at mem[off:off+4], for use with sync/atomic
// or futex.
//
// Correctness: mem is a MAP_SHARED mapping that starts on a page boundary, so the address
// alignment checked here holds for the life of the mapping; the mapping is not Go heap
// memory, so the garbage collector neither moves it nor scans it, and a pointer into it
// stays valid until the mapping is unmapped, which the owner of mem does only after every
// user is done.
// off is a constant of this package or derived from one, so a bad off is a bug in the
// caller and panics rather than returning an error.
func Uint32(mem []byte, off int) *uint32 {
	if off < 0 || off+4 > len(mem) || uintptr(unsafe.Pointer(&mem[off]))%4 != 0 {
		panic("layout: misaligned or out-of-range uint32 offset")
	}
	return (*uint32)(unsafe.Pointer(&mem[off]))
}

// Uint64 is Uint32 for a 64-bit word; off must be a multiple of 8.
func Uint64(mem []byte, off int) *uint64 {
	if off < 0 || off+8 > len(mem) || uintptr(unsafe.Pointer(&mem[off]))%8 != 0 {
		panic("layout: misaligned or out-of-range uint64 offset")
	}
	return (*uint64)(unsafe.Pointer(&mem[off]))
}

// Int64 is Uint64 for a signed word.
func Int64(mem []byte, off int) *int64 {
	if off < 0 || off+8 > len(mem) || uintptr(unsafe.Pointer(&mem[off]))%8 != 0 {
		panic("layout: misaligned or out-of-range int64 offset")
	}
	return (*int64)(unsafe.Pointer(&mem[off]))
}
