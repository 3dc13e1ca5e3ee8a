//go:build !race

#include "textflag.h"

// func storeRelease32(addr *uint32, v uint32)
// STLRW: a store-release; earlier loads and stores are not reordered after it.
TEXT ·storeRelease32(SB), NOSPLIT, $0-12
	MOVD addr+0(FP), R0
	MOVW v+8(FP), R1
	STLRW R1, (R0)
	RET

// func storeRelease64(addr *uint64, v uint64)
TEXT ·storeRelease64(SB), NOSPLIT, $0-16
	MOVD addr+0(FP), R0
	MOVD v+8(FP), R1
	STLR R1, (R0)
	RET
