package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/ring"
)

// Record types of request-response. Every record's payload starts with the call's
// correlation id (8 bytes, little endian); the rest is the request, the reply, or for
// TypeError the handler's error text.
const (
	TypeRequest uint32 = 1
	TypeReply   uint32 = 2
	TypeError   uint32 = 3
)

const idLen = 8

// RemoteError is a handler's error, as the caller receives it.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return "broker: remote: " + e.Msg }

// ErrClientClosed is returned by Call after the Client's Close.
var ErrClientClosed = fmt.Errorf("broker: client closed: %w", ring.ErrClosed)

// Client makes calls on a connection: Call is safe from many goroutines, with many calls
// in flight. The callers take turns reading the replies (leader and followers): the one
// whose turn it is reads, hands each reply to its caller by correlation id, and gives the
// turn up once its own reply came. A lone caller reads its own reply, with no hand-off
// between goroutines; with no call in flight nobody reads. The Client owns the connection
// from NewClient on (Close closes it).
type Client struct {
	conn *Conn
	sem  chan struct{} // the sending turn: one writer on the ring, waiting with its ctx
	turn chan struct{} // the reading turn

	mu      sync.Mutex
	pending map[uint64]*call
	nextID  uint64
	err     error // set once the connection failed or was closed: every later Call gets it

	late atomic.Uint64
}

// call is one call in flight; pooled. Whoever deletes it from pending owns it: a reader
// then fills it and sends on ch; a caller that gave up just takes it back.
type call struct {
	ch    chan struct{}
	reply []byte // where the reply is appended (the caller's dst)
	err   error
}

var callPool = sync.Pool{New: func() any { return &call{ch: make(chan struct{}, 1)} }}

// NewClient makes calls on conn.
func NewClient(conn *Conn) *Client {
	return &Client{conn: conn, sem: make(chan struct{}, 1), turn: make(chan struct{}, 1), pending: map[uint64]*call{}}
}

// Late counts replies that arrived after their call had given up (deadline, cancellation):
// dropped, never delivered to another call.
func (c *Client) Late() uint64 { return c.late.Load() }

// Call sends req and waits for its reply until ctx ends. A handler's error comes back as a
// *RemoteError; ring.ErrPeerDead (wrapped) when the server died, within the rings' liveness
// checks (about 200 ms) whatever ctx's deadline; io.EOF (wrapped) when the server closed the
// connection; ErrClientClosed after Close.
func (c *Client) Call(ctx context.Context, req []byte) ([]byte, error) {
	return c.CallAppend(ctx, nil, req)
}

// CallAppend is Call appending the reply to dst: with room in dst it allocates nothing,
// with context.Background or with a long-lived context that can end (the ring keeps its
// wake-up registered). Callers with contexts of their own cost context.AfterFunc's
// allocations when the reading turn passes between them and the reader sleeps.
func (c *Client) CallAppend(ctx context.Context, dst, req []byte) ([]byte, error) {
	cl := callPool.Get().(*call)
	cl.reply, cl.err = dst, nil
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		callPool.Put(cl)
		return dst, err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = cl
	c.mu.Unlock()

	if err := c.send(ctx, id, req); err != nil {
		if c.forget(id) {
			callPool.Put(cl)
			return dst, err
		}
		<-cl.ch // the connection failed meanwhile and failed the call: its error says more
		return c.finish(cl)
	}
	for {
		if ctx.Err() != nil {
			break
		}
		select {
		case <-cl.ch:
			return c.finish(cl)
		case c.turn <- struct{}{}:
			c.read(ctx, cl)
			<-c.turn
		case <-ctx.Done():
		}
		if len(cl.ch) > 0 {
			<-cl.ch
			return c.finish(cl)
		}
	}
	if c.forget(id) {
		callPool.Put(cl)
		return dst, ctx.Err()
	}
	<-cl.ch // the reply was being delivered: take it
	return c.finish(cl)
}

func (c *Client) finish(cl *call) ([]byte, error) {
	reply, err := cl.reply, cl.err
	cl.reply, cl.err = nil, nil
	callPool.Put(cl)
	return reply, err
}

// forget removes call id from pending; false when a reader already took it.
func (c *Client) forget(id uint64) bool {
	c.mu.Lock()
	_, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	return ok
}

func (c *Client) send(ctx context.Context, id uint64, req []byte) error {
	if err := ctx.Err(); err != nil {
		return err // select below could pick a free sending turn over ctx's end
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.sem }()
	p, err := c.reserve(ctx, idLen+len(req))
	if err != nil {
		switch {
		case errors.Is(err, ring.ErrPeerDead):
			c.conn.remove()
			c.fail(err) // every call in flight and later ends with it
			err = fmt.Errorf("broker: connection lost: %w", err)
		case errors.Is(err, ring.ErrClosed):
			err = ErrClientClosed
		}
		return err
	}
	binary.LittleEndian.PutUint64(p, id)
	copy(p[idLen:], req)
	if err := c.conn.w.Commit(); err != nil {
		if errors.Is(err, ring.ErrClosed) {
			return ErrClientClosed // Close came between Reserve and Commit
		}
		return err
	}
	return nil
}

// reserve waits for room for a request. While the ring is full it also reads replies when
// nobody else does: replies that came after their callers gave up could otherwise fill the
// reply ring, stop the server, fill the request ring, and leave every new caller waiting
// here with nobody reading.
func (c *Client) reserve(ctx context.Context, n int) ([]byte, error) {
	for {
		p, err := c.conn.w.TryReserve(TypeRequest, n)
		if err != ring.ErrFull {
			return p, err
		}
		select {
		case c.turn <- struct{}{}:
			c.drain()
			<-c.turn
		default:
		}
		wait, cancel := context.WithTimeout(ctx, time.Millisecond)
		p, err = c.conn.w.Reserve(wait, TypeRequest, n)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return p, err
		}
	}
}

// drain hands the replies that have arrived to their callers, without waiting.
func (c *Client) drain() {
	for {
		rec, err := c.conn.r.TryNext()
		if err != nil {
			if err != ring.ErrEmpty {
				c.fail(err)
			}
			return
		}
		c.deliver(rec)
	}
}

// read is a reading turn: it hands replies to their callers until me's has come, ctx ends
// or the connection fails (then it fails every call in flight).
func (c *Client) read(ctx context.Context, me *call) {
	for len(me.ch) == 0 {
		rec, err := c.conn.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
				return // our wait ended, not the connection
			}
			c.fail(err)
			return
		}
		c.deliver(rec)
	}
}

// deliver hands one reply record to its caller (or counts it late) and releases it.
func (c *Client) deliver(rec ring.Record) {
	if len(rec.Data) < idLen || (rec.Type != TypeReply && rec.Type != TypeError) {
		c.conn.r.Reject()
		return
	}
	id := binary.LittleEndian.Uint64(rec.Data)
	c.mu.Lock()
	cl, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if !ok {
		c.late.Add(1)
		c.conn.Release()
		return
	}
	body := rec.Data[idLen:]
	if rec.Type == TypeError {
		cl.err = &RemoteError{Msg: string(body)}
	} else {
		cl.reply = append(cl.reply, body...)
	}
	c.conn.Release()
	cl.ch <- struct{}{}
}

// fail ends the client with the connection's error: every call in flight and every later
// one returns it.
func (c *Client) fail(err error) {
	switch {
	case errors.Is(err, ring.ErrClosed):
		err = ErrClientClosed
	case err == io.EOF:
		err = fmt.Errorf("broker: server closed the connection: %w", io.EOF)
	default:
		err = fmt.Errorf("broker: connection lost: %w", err)
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	for id, cl := range c.pending {
		delete(c.pending, id)
		cl.err = c.err
		cl.ch <- struct{}{}
	}
	c.mu.Unlock()
}

// Close closes the connection; calls in flight and later return ErrClientClosed.
func (c *Client) Close() error {
	err := c.conn.Close() // wakes a reading turn, which fails the calls in flight
	c.mu.Lock()
	if c.err == nil {
		c.err = ErrClientClosed
	}
	c.mu.Unlock()
	return err
}

// Handler serves one request. AppendHandler appends its reply to dst (a buffer Serve reuses)
// and returns it, allocating nothing when the reply fits.
type (
	Handler       func(req []byte) ([]byte, error)
	AppendHandler func(dst, req []byte) ([]byte, error)
)

// Serve answers the requests arriving on conn with handler, run on at most workers
// goroutines at a time (1 if workers < 1), until the client closes (nil, also when it closed
// while replies were backed up in a full reply ring), the client dies
// (an error matching ring.ErrPeerDead; conn's rings are removed) or ctx ends (ctx's
// error). A handler's error or panic goes back to the caller as a *RemoteError, and so does
// a reply too large for the reply ring ("reply too large"; error texts are cut to fit). When the
// client closed, Serve waits for running handlers before it returns; when the client died
// or ctx ended it returns at once, and handlers still running finish on their own (their
// replies are dropped): a handler that should stop then needs its own way to learn of it.
// It closes conn when ctx ends or a reply cannot be written (its blocked read waits with
// no context and is woken by the Close); otherwise closing conn is the caller's.
func Serve(ctx context.Context, conn *Conn, handler Handler, workers int) error {
	return ServeAppend(ctx, conn, func(dst, req []byte) ([]byte, error) {
		reply, err := handler(req)
		return append(dst, reply...), err
	}, workers)
}

type job struct {
	req, reply []byte
}

// ServeAppend is Serve with an AppendHandler.
//
// The workers take turns reading (leader and followers): one reads a request, copies it,
// hands the reading turn on and runs the handler itself, so that no request waits for a
// hand-off between goroutines. With one worker the handler runs on the request in place.
// With several, while handlers take less than about 5 µs on average, the worker that read
// a request keeps the turn and serves it itself: handing the turn on wakes another
// goroutine (often an OS thread), which costs more than such a handler. If such a handler
// runs past 20 µs (and Go's timer latency) the turn is handed on anyway, so that a slow
// or blocked handler never holds up the requests behind it, and the next requests go to
// other workers until handlers are quick again.
func ServeAppend(ctx context.Context, conn *Conn, handler AppendHandler, workers int) error {
	workers = max(workers, 1)
	inline := workers == 1
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Reads wait without ctx: ctx's end, or a failed write, wakes them by closing conn.
	stopClose := context.AfterFunc(ctx, func() { conn.Close() })
	var (
		readMu  sync.Mutex // the reading turn
		stopped atomic.Bool
		wg      sync.WaitGroup
	)
	sem := make(chan struct{}, 1) // one writer on the reply ring at a time
	result := make(chan error, workers)
	below, after := inPlaceBelow, handOffAfter
	var took atomic.Int64 // handlers' recent duration (ns), a moving average
	took.Store(2 * below) // hand requests on until handlers proved quick
	for range workers {
		wg.Go(func() {
			var j job
			// The reading turn (readMu) is held across iterations while requests are
			// served by the goroutine that read them (keep); valve hands it on when such a
			// handler runs long, so that a slow or blocked handler never keeps the other
			// workers from reading. holding says the turn is still ours to give back:
			// whoever clears it (valve or this goroutine) decides who unlocks.
			var holding atomic.Bool
			valve := time.AfterFunc(time.Hour, func() {
				if holding.CompareAndSwap(true, false) {
					readMu.Unlock()
				}
			})
			valve.Stop()
			defer valve.Stop()
			held := false
			for {
				if !held {
					readMu.Lock()
					held = true
				}
				if stopped.Load() {
					readMu.Unlock()
					return
				}
				rec, err := conn.Recv(context.Background())
				if err != nil {
					stopped.Store(true)
					readMu.Unlock()
					result <- err
					return
				}
				if rec.Type != TypeRequest || len(rec.Data) < idLen {
					conn.r.Reject()
					continue
				}
				// Handing the reading turn on wakes another worker, often an OS thread: for
				// handlers quicker than that, the reader serves the request itself.
				keep := !inline && took.Load() < below
				switch {
				case inline:
					j.req = rec.Data // in place: no other worker to hand the turn to
				case keep:
					j.req = append(j.req[:0], rec.Data...)
					conn.Release()
					holding.Store(true)
					valve.Reset(after)
				default:
					j.req = append(j.req[:0], rec.Data...)
					conn.Release()
					readMu.Unlock()
					held = false
				}
				t0 := time.Now()
				err = serveOne(ctx, conn, handler, &j, sem)
				if !inline {
					d := int64(time.Since(t0))
					prev := took.Load()
					took.Store(prev + (d-prev)/8) // races between workers only blur the average
				}
				switch {
				case inline:
					j.req = nil
					conn.Release()
				case keep:
					valve.Stop()
					if !holding.CompareAndSwap(true, false) {
						held = false // the valve handed the turn on
					}
				}
				if err != nil && ctx.Err() == nil {
					stopped.Store(true)
					if held {
						readMu.Unlock()
					}
					result <- err
					cancel() // closes conn: wakes the worker reading
					return
				}
			}
		})
	}
	// The first to stop says why. A failed write reports before it closes conn, so an
	// ErrClosed read with ctx ended means ctx ended (or the caller closed conn).
	var err error
	select {
	case err = <-result:
	case <-ctx.Done():
		// ctx ended while no worker was reading (all of them in handlers, say): return at
		// once. A worker that failed reports before it cancels, so its error comes first.
		select {
		case err = <-result:
		default:
			err = ctx.Err()
		}
	}
	if errors.Is(err, ring.ErrClosed) && ctx.Err() != nil {
		err = ctx.Err()
	}
	stopped.Store(true)
	// ctx's Done is closed before its AfterFunc starts: seen ended here, the AfterFunc may
	// not have run yet, and stopClose may be what stops it. So close here when ctx ended (also
	// to wait for a Close the AfterFunc began): a worker blocked reading must wake up, and
	// the client must see the end of the replies.
	stopClose()
	if ctx.Err() != nil && err != io.EOF {
		conn.Close()
	}
	cancel() // replies still being written would wait for a reader that will never come
	if err == io.EOF {
		wg.Wait() // the client closed: let running handlers finish (their replies are dropped)
		return nil
	}
	return err
}

// serveOne runs the handler on one request and writes its reply.
func serveOne(ctx context.Context, conn *Conn, handler AppendHandler, j *job, sem chan struct{}) error {
	id := j.req[:idLen]
	typ := TypeReply
	reply, err := runHandler(handler, j.reply[:0], j.req[idLen:])
	if err != nil {
		typ = TypeError
		reply = append(reply[:0], err.Error()...)
	}
	j.reply = reply
	if limit := conn.w.MaxMessage() - idLen; len(reply) > limit {
		// One reply that cannot fit must not end the connection: the caller gets an error.
		if typ == TypeReply {
			reply = fmt.Appendf(reply[:0], "reply too large (%d bytes, at most %d)", len(reply), limit)
			typ = TypeError
		}
		reply = reply[:min(len(reply), limit)]
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-sem }()
	p, err := reserveReply(ctx, conn, typ, idLen+len(reply))
	if err != nil {
		if errors.Is(err, ring.ErrPeerDead) {
			conn.remove()
		}
		return err
	}
	copy(p, id)
	copy(p[idLen:], reply)
	return conn.w.Commit()
}

// reserveReply waits for room for a reply. A writer waits as long as the ring has no reader,
// and nobody may be reading the requests to see the client's end of stream: so while the
// reply ring is full it looks every few milliseconds whether the client's reader is still
// attached, and returns io.EOF (the client closed) once it is not.
func reserveReply(ctx context.Context, conn *Conn, typ uint32, n int) ([]byte, error) {
	for {
		p, err := conn.w.TryReserve(typ, n)
		if err != ring.ErrFull {
			return p, err
		}
		wait, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		p, err = conn.w.Reserve(wait, typ, n)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return p, err
		}
		if st, err := ring.ReadStats(conn.wseg); err == nil && st.ReadersOpen == 0 {
			return nil, io.EOF
		}
	}
}

func runHandler(handler AppendHandler, dst, req []byte) (reply []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			reply, err = dst, fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return handler(dst, req)
}

// inPlaceBelow: while handlers take less than this on average, the worker that read a
// request serves it itself instead of handing the reading turn on (a hand-off wakes a
// goroutine, and often an OS thread: a few microseconds). handOffAfter: a handler served
// so that has run this long gets the turn handed on (by a timer, so Go's timer latency
// comes on top). Variables for the tests; ServeAppend reads them once.
var (
	inPlaceBelow = int64(5 * time.Microsecond)
	handOffAfter = 20 * time.Microsecond
)
