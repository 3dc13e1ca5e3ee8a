//go:build !race

#include "textflag.h"

// func loadLoad()
// TSO: loads are not reordered with other loads; the call is the compiler barrier.
TEXT ·loadLoad(SB), NOSPLIT, $0-0
	RET

// func storeStore()
// TSO: stores are not reordered with other stores.
TEXT ·storeStore(SB), NOSPLIT, $0-0
	RET
