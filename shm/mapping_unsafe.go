package shm

import "unsafe"

// contains reports whether addr lies inside the segment's mapping (header and data region,
// which are one mapping). The bounds are those fixed at open; the answer says nothing about
// whether the mapping is still there.
func (s *Segment) contains(addr uintptr) bool {
	if len(s.header) == 0 {
		return false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(s.header)))
	return addr >= base && addr-base < uintptr(s.desc.FileSize())
}
