package loop_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// One goroutine serves a ring's reader and a timer; the handler runs on each record in
// place, and the end of the stream (the writer closed) stops the loop.
func Example() {
	dir, err := os.MkdirTemp("", "loop-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	seg, err := ring.Create("orders", ring.Spec{Kind: ring.SPSC, Size: 64 << 10}, shm.Options{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer seg.Close()
	w, err := ring.NewWriter(seg, ring.Options{})
	if err != nil {
		log.Fatal(err)
	}
	r, err := ring.NewReader(seg, ring.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	l := loop.New(loop.Options{})
	_, err = l.Add(r, func(rec ring.Record) error {
		fmt.Printf("order %d: %s\n", rec.Type, rec.Data) // valid during the call only
		return nil
	}, func(err error) {
		fmt.Println("stream ended:", err)
		l.Stop()
	})
	if err != nil {
		log.Fatal(err)
	}

	// Another process would write; here the writer writes after the loop has started,
	// from a timer on the loop itself.
	if _, err := l.AfterFunc(time.Millisecond, func() {
		_ = w.TryWrite(1, []byte("buy 100"))
		_ = w.TryWrite(2, []byte("sell 50"))
		w.Close() // the last writer's Close ends the stream
	}); err != nil {
		log.Fatal(err)
	}
	if err := l.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
	// Output:
	// order 1: buy 100
	// order 2: sell 50
	// stream ended: EOF
}
