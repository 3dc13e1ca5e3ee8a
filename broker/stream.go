package broker

import (
	"context"
	"errors"
	"io"

	"github.com/shmq/shmq/ring"
)

// Stream returns the connection as an io.ReadWriteCloser of whole messages, for code
// written against streams: each Write sends p as one message (of type 0), each Read
// returns one whole message, and io.ErrShortBuffer (the message stays for the next Read)
// when p cannot hold it. Reads and writes wait without a deadline; Close closes the
// connection. Like the connection, one goroutine may read while another writes.
func (c *Conn) Stream() io.ReadWriteCloser { return stream{c} }

type stream struct{ c *Conn }

func (s stream) Write(p []byte) (int, error) {
	if err := s.c.Send(context.Background(), 0, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s stream) Read(p []byte) (int, error) {
	n, _, err := s.c.r.Read(context.Background(), p)
	if errors.Is(err, ring.ErrPeerDead) {
		s.c.remove() // as Recv does
	}
	return n, err
}

func (s stream) Close() error { return s.c.Close() }
