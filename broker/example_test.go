//go:build linux

package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/shmq/shmq/broker"
)

// A server answers calls on every connection; a client (here in the same process, usually
// another one) dials it by name and calls.
func Example() {
	dir, _ := os.MkdirTemp("/dev/shm", "broker-example-")
	defer os.RemoveAll(dir)
	opts := broker.Options{Dir: dir}
	ctx := context.Background()

	// Server.
	l, err := broker.Listen("greeter", opts)
	if err != nil {
		panic(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept(ctx)
			if err != nil {
				return // l closed
			}
			go func() {
				defer conn.Close()
				broker.Serve(ctx, conn, func(req []byte) ([]byte, error) {
					return bytes.ToUpper(req), nil
				}, 4)
			}()
		}
	}()

	// Client.
	conn, err := broker.Dial(ctx, "greeter", opts)
	if err != nil {
		panic(err)
	}
	c := broker.NewClient(conn)
	defer c.Close()
	reply, err := c.Call(ctx, []byte("hello"))
	fmt.Println(string(reply), err)
	// Output: HELLO <nil>
}
