//go:build linux

package metrics

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// region is this process's own mapping of a set's data region, made by duplicating the
// segment's mapping (mremap with an old size of 0, which Linux allows for shared mappings:
// a second mapping of the same pages). Recording handles point into it, not into the
// segment's mapping, so that Set.Close can give the segment back (its peer entry, its
// file) while handles other goroutines still hold stay safe to use: the region is unmapped
// only when the Set and every handle from it are unreachable, by a cleanup the garbage
// collector runs.
type region struct {
	data []byte // len is the data region's size; never resliced
}

type mappedRange struct {
	p unsafe.Pointer // not Go memory: the garbage collector neither scans nor moves it
	n uintptr
}

// duplicate maps data (a whole, page-aligned, MAP_SHARED mapping of a segment's data
// region) a second time, with the same protection.
func duplicate(data []byte) (*region, error) {
	p, err := unix.MremapPtr(unsafe.Pointer(unsafe.SliceData(data)), 0, nil, uintptr(len(data)), unix.MREMAP_MAYMOVE)
	if err != nil {
		return nil, err
	}
	r := &region{data: unsafe.Slice((*byte)(p), len(data))}
	runtime.AddCleanup(r, func(m mappedRange) { _ = unix.MunmapPtr(m.p, m.n) }, mappedRange{p, uintptr(len(data))})
	return r, nil
}
