//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/shmq/shmq/ring"
)

// sender sends fixed-size messages: fill writes the message in place (in the ring's memory
// for shmq and the floor, in a buffer for the kernel's transports).
type sender interface {
	send(ctx context.Context, size int, fill func([]byte)) error
	// sendN sends n messages as one batch (--batch): one Commit, one system call, one
	// position store; fill gets each message's index in the batch.
	sendN(ctx context.Context, size, n int, fill func(int, []byte)) error
	close() error
}

// receiver hands each message to fn (in place for shmq) and returns io.EOF at the end of
// the stream.
type receiver interface {
	recv(ctx context.Context, fn func([]byte)) error
	// recvN waits for at least one message, then hands fn every one that has arrived, up
	// to max, as one batch (a ring's Drain, one read, one position store).
	recvN(ctx context.Context, max int, fn func([]byte)) error
	close() error
}

// --- shmq rings ---

type ringSender struct {
	w    ring.Writer
	recs [][]byte // sendN's reserved records, reused
}

func (s *ringSender) send(ctx context.Context, size int, fill func([]byte)) error {
	p, err := s.w.Reserve(ctx, 0, size)
	if err != nil {
		return err
	}
	fill(p)
	return s.w.Commit()
}

func (s *ringSender) sendN(ctx context.Context, size, n int, fill func(int, []byte)) error {
	for i := 0; i < n; {
		var err error
		// As many as fit, at least one: a batch larger than the room goes out in parts.
		if s.recs, err = s.w.ReserveBatch(ctx, 0, size, n-i, s.recs[:0]); err != nil {
			return err
		}
		for _, p := range s.recs {
			fill(i, p)
			i++
		}
	}
	return s.w.Commit() // one store publishes the batch (ReserveBatch published early if the ring filled)
}

// close detaches the writer; the last writer's Close ends the stream.
func (s *ringSender) close() error { return s.w.Close() }

type ringReceiver struct {
	r       ring.Reader
	fn      func([]byte) // recvN's fn, for drainFn
	drainFn func(ring.Record) error
}

func (r *ringReceiver) recv(ctx context.Context, fn func([]byte)) error {
	rec, err := r.r.Next(ctx)
	if err != nil {
		return err // io.EOF at the end of the stream
	}
	fn(rec.Data)
	r.r.Release()
	return nil
}

func (r *ringReceiver) recvN(ctx context.Context, max int, fn func([]byte)) error {
	r.fn = fn
	_, err := r.r.Drain(ctx, r.drainFn, max)
	return err // io.EOF at the end of the stream
}

func (r *ringReceiver) close() error { return r.r.Close() }

func openRingSender(dir, name string, wait ring.Wait) (sender, error) {
	seg, err := openChildSegment(dir, name)
	if err != nil {
		return nil, err
	}
	w, err := ring.NewWriter(seg, ring.Options{Wait: wait})
	if err != nil {
		return nil, err
	}
	return &ringSender{w: w}, nil
}

func openRingReceiver(dir, name string, wait ring.Wait) (receiver, error) {
	seg, err := openChildSegment(dir, name)
	if err != nil {
		return nil, err
	}
	r, err := ring.NewReader(seg, ring.Options{Wait: wait})
	if err != nil {
		return nil, err
	}
	rr := &ringReceiver{r: r}
	rr.drainFn = func(rec ring.Record) error { rr.fn(rec.Data); return nil }
	return rr, nil
}

// --- the kernel's transports: a pipe, a Unix stream socket, a TCP loopback connection ---

// fdTransport is one end of a kernel transport, used with blocking read and write system
// calls (the way a plain program uses them; the Go runtime's poller is not involved).
type fdTransport struct {
	fd   int
	buf  []byte // one message, for send and recv
	wbuf []byte // sendN's batch
	rbuf []byte // recvN's buffer: rbuf[:have] arrived and is not handed out yet
	have int
}

func newFDTransport(f *os.File, size int) *fdTransport {
	fd, _ := syscall.Dup(int(f.Fd()))
	f.Close()
	return &fdTransport{fd: fd, buf: make([]byte, size)}
}

// writeAll writes p, however many system calls it takes.
func (t *fdTransport) writeAll(p []byte) error {
	for len(p) > 0 {
		n, err := syscall.Write(t.fd, p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

func (t *fdTransport) send(_ context.Context, size int, fill func([]byte)) error {
	p := t.buf[:size]
	fill(p)
	return t.writeAll(p)
}

// sendN fills n messages into one buffer and writes it with one write (more only if the
// kernel takes part of it).
func (t *fdTransport) sendN(_ context.Context, size, n int, fill func(int, []byte)) error {
	if len(t.wbuf) < n*size {
		t.wbuf = make([]byte, n*size)
	}
	for i := range n {
		fill(i, t.wbuf[i*size:(i+1)*size])
	}
	return t.writeAll(t.wbuf[:n*size])
}

func (t *fdTransport) recv(_ context.Context, fn func([]byte)) error {
	p := t.buf
	for got := 0; got < len(p); {
		n, err := syscall.Read(t.fd, p[got:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			if got == 0 {
				return io.EOF
			}
			return fmt.Errorf("stream ended inside a message (%d of %d bytes)", got, len(p))
		}
		got += n
	}
	fn(p)
	return nil
}

// recvN reads as much as arrives, up to max messages' worth, until it holds at least one
// whole message; hands fn every whole message; and keeps a partial one for the next call.
func (t *fdTransport) recvN(_ context.Context, most int, fn func([]byte)) error {
	size := len(t.buf)
	limit := max(most, 1) * size // t.have < size <= limit
	if len(t.rbuf) < limit {
		t.rbuf = append(t.rbuf[:t.have], make([]byte, limit-t.have)...)
	}
	for t.have < size {
		n, err := syscall.Read(t.fd, t.rbuf[t.have:limit])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			if t.have == 0 {
				return io.EOF
			}
			return fmt.Errorf("stream ended inside a message (%d of %d bytes)", t.have, size)
		}
		t.have += n
	}
	whole := t.have / size * size
	for off := 0; off < whole; off += size {
		fn(t.rbuf[off : off+size])
	}
	t.have = copy(t.rbuf, t.rbuf[whole:t.have])
	return nil
}

func (t *fdTransport) close() error { return syscall.Close(t.fd) }
