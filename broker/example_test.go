//go:build linux

package broker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/shmq/shmq/broker"
	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
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

// A server and a client each driven by an event loop: the server accepts on its loop and
// answers every record there; the client dials without blocking (DialTo), and its loop
// gets the connection, the reply and the end of the connection.
func Example_loop() {
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
	srv := loop.New(loop.Options{})
	l.AddTo(srv, func(conn *broker.Conn) { // accepted
		conn.AddTo(srv, func(rec ring.Record) error {
			err := conn.Send(ctx, rec.Type, bytes.ToUpper(rec.Data))
			conn.Close() // one reply per connection here
			return err
		}, func(error) { conn.Close() }) // also when the client closed (io.EOF) or died (ring.ErrPeerDead)
	}, nil)
	go srv.Run(ctx)
	defer srv.Stop()

	// Client.
	cli := loop.New(loop.Options{})
	broker.DialTo(ctx, cli, "greeter", opts, func(conn *broker.Conn, err error) {
		if err != nil { // broker.ErrNoServer: no server, or it went before accepting
			fmt.Println(err)
			cli.Stop()
			return
		}
		conn.AddTo(cli, func(rec ring.Record) error {
			fmt.Println(string(rec.Data))
			return nil
		}, func(err error) { fmt.Println("ended:", err); conn.Close(); cli.Stop() }) // io.EOF: the server closed
		conn.Send(ctx, 1, []byte("hello"))
	})
	cli.Run(ctx)
	// Output:
	// HELLO
	// ended: EOF
}

// Sending without a copy: the record is filled where the peer reads it.
func ExampleConn_Reserve() {
	dir, _ := os.MkdirTemp("/dev/shm", "broker-example-")
	defer os.RemoveAll(dir)
	opts := broker.Options{Dir: dir, Poison: true} // Poison: a test catches a buffer used after its send
	ctx := context.Background()
	l, _ := broker.Listen("svc", opts)
	defer l.Close()
	got := make(chan string)
	go func() {
		conn, _ := l.Accept(ctx)
		rec, _ := conn.Recv(ctx)
		got <- string(rec.Data)
		conn.Release()
		conn.Close()
	}()
	conn, _ := broker.Dial(ctx, "svc", opts)
	p, _ := conn.Reserve(ctx, 1, 5) // room for 5 bytes in the ring
	copy(p, "hello")
	conn.Commit() // p is the ring's from here on
	p[0] = 'J'    // a bug: with Poison the next call says so
	_, err := conn.Reserve(ctx, 1, 5)
	fmt.Println(<-got) // what the peer received: the record as it was at Commit
	fmt.Println(errors.Is(err, broker.ErrBufferReused))
	conn.Close()
	// Output:
	// hello
	// true
}
