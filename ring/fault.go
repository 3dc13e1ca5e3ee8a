package ring

import (
	"fmt"
	"runtime/debug"

	"github.com/shmq/shmq/shm"
)

// The views of a segment (ReadStats, ReadTopicStats, Peek, PeekTopic) run rarely and may
// meet a file that another process truncated under the mapping: the pages past its new end
// fault (SIGBUS), which would kill the process. They run with debug.SetPanicOnFault, which
// turns such a fault into a panic on this goroutine, and recover it as shm.ErrTruncated.
// The endpoints' hot paths do not (see the package's Caveats).

// viewFaults starts a guarded view: it returns the function to defer, which restores the
// goroutine's setting and turns a fault into an error in *err (other panics go on).
func viewFaults(seg *shm.Segment, err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if v := recover(); v != nil {
			if _, fault := v.(interface{ Addr() uintptr }); !fault {
				panic(v)
			}
			*err = fmt.Errorf("%w: %s shrank under its mapping (%v)", shm.ErrTruncated, seg.Name(), v)
		}
	}
}
