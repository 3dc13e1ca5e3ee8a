//go:build linux

package rpcbench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"

	"github.com/shmq/shmq/broker"
	"github.com/shmq/shmq/ring"
)

// Builtin is the transports of the core module: shmq (the broker: a connection is a pair of
// shared-memory rings; Client.CallAppend, ServeAppend) and unix (a Unix socket, a 4-byte
// length prefix, one request then one reply; a connection per caller, since it cannot
// carry calls of several callers at once).
func Builtin() []Transport { return []Transport{Shmq(), Unix()} }

// Shmq calls over a broker connection: every caller on one Client.
func Shmq() Transport {
	const name = "rpcbench"
	ringOpts := func(o Options) (broker.Options, error) {
		var w ring.Wait
		if o.Wait != "" {
			var err error
			if w, err = ring.ParseWait(o.Wait); err != nil {
				return broker.Options{}, err
			}
		}
		return broker.Options{Wait: w}, nil
	}
	return Transport{
		Name: "shmq",
		Serve: func(ctx context.Context, dir string, o Options, ready func()) error {
			opts, err := ringOpts(o)
			if err != nil {
				return err
			}
			opts.Dir = dir
			l, err := broker.Listen(name, opts)
			if err != nil {
				return err
			}
			defer l.Close()
			ready()
			for {
				conn, err := l.Accept(ctx)
				if err != nil {
					return err
				}
				go func() {
					defer conn.Close()
					_ = broker.ServeAppend(ctx, conn, func(dst, req []byte) ([]byte, error) {
						return append(dst, req...), nil
					}, o.Workers)
				}()
			}
		},
		Dial: func(ctx context.Context, dir string, n int, o Options) ([]Caller, func(), error) {
			opts, err := ringOpts(o)
			if err != nil {
				return nil, nil, err
			}
			opts.Dir = dir
			conn, err := broker.Dial(ctx, name, opts)
			if err != nil {
				return nil, nil, err
			}
			cl := broker.NewClient(conn)
			callers := make([]Caller, n)
			for i := range callers {
				callers[i] = cl.CallAppend
			}
			return callers, func() { cl.Close() }, nil
		},
	}
}

// Unix calls over Unix sockets with a 4-byte little-endian length prefix.
func Unix() Transport {
	return Transport{
		Name: "unix",
		Serve: func(ctx context.Context, dir string, _ Options, ready func()) error {
			ln, err := net.Listen("unix", filepath.Join(dir, "rpc.sock"))
			if err != nil {
				return err
			}
			defer ln.Close()
			context.AfterFunc(ctx, func() { ln.Close() })
			ready()
			for {
				conn, err := ln.Accept()
				if err != nil {
					return err
				}
				go serveFramed(conn)
			}
		},
		Dial: func(ctx context.Context, dir string, n int, _ Options) ([]Caller, func(), error) {
			var conns []net.Conn
			closeAll := func() {
				for _, c := range conns {
					c.Close()
				}
			}
			var d net.Dialer
			callers := make([]Caller, n)
			for i := range callers {
				conn, err := d.DialContext(ctx, "unix", filepath.Join(dir, "rpc.sock"))
				if err != nil {
					closeAll()
					return nil, nil, err
				}
				conns = append(conns, conn)
				callers[i] = framedCaller(conn)
			}
			return callers, closeAll, nil
		},
	}
}

// maxFrame bounds a length prefix read from the peer.
const maxFrame = 64 << 20

// serveFramed echoes length-prefixed messages on conn until it ends.
func serveFramed(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	buf := make([]byte, 4, 4+4096)
	for {
		if _, err := io.ReadFull(r, buf[:4]); err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(buf[:4])
		if n > maxFrame {
			return
		}
		buf = append(buf[:4], make([]byte, n)...)
		if _, err := io.ReadFull(r, buf[4:]); err != nil {
			return
		}
		if _, err := conn.Write(buf); err != nil {
			return
		}
	}
}

// framedCaller calls over conn, one call at a time.
func framedCaller(conn net.Conn) Caller {
	r := bufio.NewReader(conn)
	var out []byte
	var hdr [4]byte
	var mu sync.Mutex
	return func(_ context.Context, dst, req []byte) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		out = binary.LittleEndian.AppendUint32(out[:0], uint32(len(req)))
		out = append(out, req...)
		if _, err := conn.Write(out); err != nil {
			return dst, err
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return dst, err
		}
		n := int(binary.LittleEndian.Uint32(hdr[:]))
		if n > maxFrame {
			return dst, errors.New("unix: reply longer than 64 MiB")
		}
		start := len(dst)
		dst = append(dst, make([]byte, n)...)
		_, err := io.ReadFull(r, dst[start:])
		return dst, err
	}
}
