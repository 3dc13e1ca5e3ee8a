package backoff_test

import (
	"fmt"
	"time"

	"github.com/shmq/shmq/backoff"
)

func Example() {
	b, err := backoff.New(backoff.Policy{Base: 100 * time.Millisecond, Factor: 2, Cap: time.Second, MaxAttempts: 6}, nil)
	if err != nil {
		panic(err)
	}
	for attempt := 1; ; attempt++ {
		if _, retry := b.Next(attempt); !retry {
			fmt.Println("attempt", attempt, "failed: give up")
			break
		}
		fmt.Println("attempt", attempt, "failed: retry after", b.Ceiling(attempt))
	}
	// Output:
	// attempt 1 failed: retry after 100ms
	// attempt 2 failed: retry after 200ms
	// attempt 3 failed: retry after 400ms
	// attempt 4 failed: retry after 800ms
	// attempt 5 failed: retry after 1s
	// attempt 6 failed: give up
}
