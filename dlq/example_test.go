package dlq_test

import (
	"context"
	"fmt"
	"os"

	"github.com/shmq/shmq/dlq"
	"github.com/shmq/shmq/shm"
)

func Example() {
	dir, _ := os.MkdirTemp("", "dlq-example-")
	defer os.RemoveAll(dir)
	opts := shm.Options{Dir: dir, RemoveOnClose: true}
	q, err := dlq.Create("orders.dlq", dlq.Config{Capacity: 64}, opts)
	if err != nil {
		panic(err)
	}
	defer q.Close()

	// A consumer gave up on two events.
	q.Put(dlq.Entry{Origin: "orders", Attempts: 5, Err: "db down", Data: []byte("event 1")})
	q.Put(dlq.Entry{Origin: "orders", Attempts: 5, Err: "bad total", Data: []byte("event 2")})

	list, _ := q.List() // consumes nothing
	for _, e := range list {
		fmt.Printf("%d %s %q after %d attempts: %s\n", e.Seq, e.State, e.Data, e.Attempts, e.Err)
	}
	n, err := q.Replay(context.Background(), func(e dlq.Entry) error {
		fmt.Printf("replaying %q to %s\n", e.Data, e.Origin)
		return nil // removed only now
	})
	fmt.Println(n, err)
	// Output:
	// 1 ready "event 1" after 5 attempts: db down
	// 2 ready "event 2" after 5 attempts: bad total
	// replaying "event 1" to orders
	// replaying "event 2" to orders
	// 2 <nil>
}
