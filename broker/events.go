package broker

import (
	"context"
	"errors"

	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
)

// Connection events on an event loop. Each reaches a listener on the loop's goroutine:
//
//	accepted          Listener.AddTo's onAccept(conn)               server
//	connected         DialTo's onConnect(conn, nil)                 client
//	server gone       DialTo's onConnect(nil, err), err matching    client
//	                  ErrNoServer: no live server holds the name, or
//	                  it died or closed before it accepted
//	closed by peer    Conn.AddTo's onEnd(io.EOF), after every       both
//	                  record the peer sent
//	peer died         Conn.AddTo's onEnd(err), err matching         both
//	                  ring.ErrPeerDead; the rings' names are removed
//
// For one connection they come in that order: accepted or connected first, then its
// records, then at most one end (onEnd also reports this side's own Close, as
// ring.ErrClosed). A dial that fails otherwise gives onConnect Dial's error (ctx's, an
// invalid name, the file system's).

// DialTo is Dial's non-blocking form: it returns at once and dials on a goroutine of its
// own, and the outcome reaches onConnect on lp's goroutine: the connection (attached: the
// server accepted it), or Dial's error. If lp has stopped by then, the connection is
// closed and onConnect is not called. Errors returned at once: an invalid name.
//
// Dialling waits on three things, two of which are polls of the directory and the peer
// table rather than ring records (a server appearing, the server's liveness every 100 ms;
// the third is the server's first record): a goroutine per dial in progress keeps one
// implementation of that protocol, Dial's, where a loop-driven one would need timers and
// a second copy of it. Dials are rare; records on the connection never pass through the
// goroutine.
func DialTo(ctx context.Context, lp *loop.Loop, name string, opts Options, onConnect func(*Conn, error)) error {
	if err := checkServerName(name); err != nil {
		return err
	}
	go func() {
		c, err := Dial(ctx, name, opts)
		if perr := lp.Post(func() { onConnect(c, err) }); perr != nil && c != nil {
			c.Close()
		}
	}()
	return nil
}

// AddTo registers the connection's receiving ring with an event loop: handler is called on
// the loop's goroutine for each record, in place (valid during the call), and onEnd, if not
// nil, once when the stream ends: io.EOF after the peer closed and everything it sent was
// handled, an error matching ring.ErrPeerDead when its process died (the rings' names are
// then removed, as by Recv), ring.ErrClosed after this side's Close. Recv must not be
// called while the connection is on a loop; Remove on the returned source takes it off.
// Sending (Send, Reserve) stays the caller's, from any one goroutine at a time; a handler
// may send, but a full ring then blocks the loop: keep replies small or use a Writer's
// TryWrite.
func (c *Conn) AddTo(lp *loop.Loop, handler func(ring.Record) error, onEnd func(error)) (*loop.Source, error) {
	return lp.Add(c.r, handler, func(err error) {
		if errors.Is(err, ring.ErrPeerDead) {
			c.remove()
		}
		if onEnd != nil {
			onEnd(err)
		}
	})
}
