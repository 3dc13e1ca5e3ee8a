package metrics

import (
	"fmt"
	"runtime/debug"

	"github.com/shmq/shmq/shm"
)

// Reading a set (Open's schema, Snapshot) may meet a file that another process truncated
// under the mapping: the pages past its new end fault (SIGBUS), which would kill the
// process. Those reads run with debug.SetPanicOnFault, which turns such a fault into a
// panic on this goroutine, recovered here as shm.ErrTruncated. The recording handles do
// not (see the package's Caveats), as the rings' endpoints do not.

// guardFaults starts a guarded read: it returns the function to defer, which restores the
// goroutine's setting and turns a fault into an error in *err (other panics go on).
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
