//go:build !race

#include "textflag.h"

// func loadLoad()
TEXT ·loadLoad(SB), NOSPLIT, $0-0
	DMB $0x9 // ISHLD
	RET

// func storeStore()
TEXT ·storeStore(SB), NOSPLIT, $0-0
	DMB $0xa // ISHST
	RET
