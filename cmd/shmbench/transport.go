//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// sender sends fixed-size messages: fill writes the message in place (in the ring's memory
// for shmq, in a buffer for the kernel's transports).
type sender interface {
	send(ctx context.Context, size int, fill func([]byte)) error
	close() error
}

// receiver hands each message to fn (in place for shmq) and returns io.EOF at the end of
// the stream.
type receiver interface {
	recv(ctx context.Context, fn func([]byte)) error
	close() error
}

// --- shmq rings ---

type ringSender struct{ w ring.Writer }

func (s *ringSender) send(ctx context.Context, size int, fill func([]byte)) error {
	p, err := s.w.Reserve(ctx, 0, size)
	if err != nil {
		return err
	}
	fill(p)
	return s.w.Commit()
}

// close detaches the writer; the last writer's Close ends the stream.
func (s *ringSender) close() error { return s.w.Close() }

type ringReceiver struct{ r ring.Reader }

func (r *ringReceiver) recv(ctx context.Context, fn func([]byte)) error {
	rec, err := r.r.Next(ctx)
	if err != nil {
		return err // io.EOF at the end of the stream
	}
	fn(rec.Data)
	r.r.Release()
	return nil
}

func (r *ringReceiver) close() error { return r.r.Close() }

func openRingSender(dir, name string, wait ring.Wait) (sender, error) {
	seg, err := shm.Open(name, shm.Options{Dir: dir})
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
	seg, err := shm.Open(name, shm.Options{Dir: dir})
	if err != nil {
		return nil, err
	}
	r, err := ring.NewReader(seg, ring.Options{Wait: wait})
	if err != nil {
		return nil, err
	}
	return &ringReceiver{r: r}, nil
}

// --- the kernel's transports: a pipe, a Unix stream socket, a TCP loopback connection ---

// fdTransport is one end of a kernel transport, used with blocking read and write system
// calls (the way a plain program uses them; the Go runtime's poller is not involved).
type fdTransport struct {
	fd  int
	buf []byte
}

func newFDTransport(f *os.File, size int) *fdTransport {
	fd, _ := syscall.Dup(int(f.Fd()))
	f.Close()
	return &fdTransport{fd: fd, buf: make([]byte, size)}
}

func (t *fdTransport) send(_ context.Context, size int, fill func([]byte)) error {
	p := t.buf[:size]
	fill(p)
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

func (t *fdTransport) close() error { return syscall.Close(t.fd) }
