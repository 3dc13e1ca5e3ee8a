//go:build linux

package fence

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// membarrier commands (linux/membarrier.h).
const (
	cmdPrivateExpedited         = 1 << 3
	cmdRegisterPrivateExpedited = 1 << 4
)

// asymmetric is decided once, before any light-side store: registration must precede
// the first MEMBARRIER_CMD_PRIVATE_EXPEDITED, and a kernel or seccomp policy that refuses
// it leaves the light side sequentially consistent.
var asymmetric = register()

func register() bool {
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, cmdRegisterPrivateExpedited, 0, 0); errno != 0 {
		return false
	}
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, cmdPrivateExpedited, 0, 0)
	return errno == 0
}

var fenceWord uint32

func heavy() {
	if asymmetric {
		if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, cmdPrivateExpedited, 0, 0); errno == 0 {
			return
		}
	}
	atomic.AddUint32(&fenceWord, 1) // a full fence on its own; the light side is seq-cst then
}

func storeSeqCst32(addr *uint32, v uint32) { atomic.StoreUint32(addr, v) }

func storeSeqCst64(addr *uint64, v uint64) { atomic.StoreUint64(addr, v) }
