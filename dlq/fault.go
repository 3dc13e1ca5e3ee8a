package dlq

import (
	"fmt"
	"runtime/debug"

	"github.com/shmq/shmq/shm"
)

// guardFaults turns a fault on the mapping (another process truncated the file: SIGBUS)
// into shm.ErrTruncated in *err, for the operation whose function defers what it returns.
// Other panics go on.
func guardFaults(name string, err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if v := recover(); v != nil {
			if _, fault := v.(interface{ Addr() uintptr }); !fault {
				panic(v)
			}
			*err = fmt.Errorf("%w: %s shrank under its mapping (%v)", shm.ErrTruncated, name, v)
		}
	}
}
