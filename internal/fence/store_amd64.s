//go:build !race

#include "textflag.h"

// func storeRelease32(addr *uint32, v uint32)
// On amd64 every plain store has release semantics (TSO): MOVL is enough.
TEXT ·storeRelease32(SB), NOSPLIT, $0-12
	MOVQ addr+0(FP), AX
	MOVL v+8(FP), BX
	MOVL BX, 0(AX)
	RET

// func storeRelease64(addr *uint64, v uint64)
TEXT ·storeRelease64(SB), NOSPLIT, $0-16
	MOVQ addr+0(FP), AX
	MOVQ v+8(FP), BX
	MOVQ BX, 0(AX)
	RET
