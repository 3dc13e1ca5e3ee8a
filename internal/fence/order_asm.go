//go:build (amd64 || arm64) && !race

package fence

// loadLoad and storeStore are in order_$GOARCH.s. Being assembly, calls to them are never
// inlined, and the compiler keeps memory accesses on their side of the call.
func loadLoad()

func storeStore()
