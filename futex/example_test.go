package futex_test

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/futex"
)

// A waiter sleeps in the kernel while a word holds 0; a waker stores 1 and wakes it. The
// waiter loops: Wait may return early (the word had changed already, a signal, a timeout),
// so the condition is checked again each time. Across processes the word lives in a shared
// segment (package ring keeps its wake-up words there); here it is a Go variable, which the
// shared operations serve the same way.
func Example() {
	var word uint32
	woken := make(chan uint32)
	go func() {
		for atomic.LoadUint32(&word) == 0 {
			// Sleeps only while the word is still 0: no wake-up between the check and the
			// sleep is lost. The timeout bounds a sleep whose waker died.
			_ = futex.Wait(&word, 0, time.Second)
		}
		woken <- atomic.LoadUint32(&word)
	}()

	atomic.StoreUint32(&word, 1) // the condition first,
	_, _ = futex.Wake(&word, 1)  // then the wake-up: at most one sleeper
	fmt.Println("woken with word =", <-woken)
	// Output: woken with word = 1
}
