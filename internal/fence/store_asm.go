//go:build (amd64 || arm64) && !race

package fence

// storeRelease32 is in store_$GOARCH.s.
//
//go:noescape
func storeRelease32(addr *uint32, v uint32)

// storeRelease64 is in store_$GOARCH.s.
//
//go:noescape
func storeRelease64(addr *uint64, v uint64)
