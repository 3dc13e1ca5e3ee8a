package codec

import "unsafe"

// view casts b to *T.
//
// Correctness: the caller checked len(b) == sizeof(T); the alignment is checked here; T has
// no pointers (NewFixed checked it), so the garbage collector has nothing to find in the
// memory and any bit pattern is a valid T (bools aside, which Go reads as true when not 0).
func view[T any](b []byte, align int) (*T, error) {
	p := unsafe.Pointer(unsafe.SliceData(b))
	if uintptr(p)%uintptr(align) != 0 {
		return nil, ErrMisaligned
	}
	return (*T)(p), nil
}
