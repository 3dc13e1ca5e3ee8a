//go:build linux

package rpc_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shmq/shmq/bench/rpc"
	"github.com/shmq/shmq/broker"
	"github.com/shmq/shmq/internal/proctest"
)

// Round trips of a 64-byte request and its 64-byte echo between this process (the caller)
// and a server in a child process (this test binary re-executed, proctest), over three
// transports in the same run:
//
//	broker: shmq broker.Client.CallAppend on a pair of shared-memory rings, ServeAppend;
//	grpc:   a gRPC unary call on a Unix socket (hand-written ServiceDesc, raw-bytes codec);
//	uds:    a plain Unix socket, a 4-byte length prefix, one request then one reply.
//
// BenchmarkRoundTrip has one caller and reports ns/op plus the p50 and p99 of every call
// (hdrhistogram); BenchmarkParallel8 has 8 callers at once on one connection and reports
// ns/op per call and calls/s:
//
//	go test -run '^$' -bench . -benchtime 2s

const (
	msgSize     = 64
	procTimeout = 60 * time.Second
	brokerName  = "bench"
)

func TestMain(m *testing.M) {
	proctest.Register("server", runServer)
	proctest.Main(m)
}

// runServer serves transport Args[0] in directory Args[1] (Args[2] broker workers), echoing
// every request, until the parent kills it.
func runServer(c *proctest.Child) error {
	if len(c.Args) != 3 {
		return fmt.Errorf("want transport, dir, workers; got %q", c.Args)
	}
	transport, dir := c.Args[0], c.Args[1]
	workers, err := strconv.Atoi(c.Args[2])
	if err != nil {
		return err
	}
	ctx := context.Background()
	switch transport {
	case "broker":
		l, err := broker.Listen(brokerName, broker.Options{Dir: dir})
		if err != nil {
			return err
		}
		defer l.Close()
		c.Point("listening")
		for {
			conn, err := l.Accept(ctx)
			if err != nil {
				return err
			}
			go func() {
				defer conn.Close()
				_ = broker.ServeAppend(ctx, conn, func(dst, req []byte) ([]byte, error) {
					return append(dst, req...), nil
				}, workers)
			}()
		}
	case "grpc":
		ln, err := net.Listen("unix", filepath.Join(dir, "grpc.sock"))
		if err != nil {
			return err
		}
		srv := grpc.NewServer(grpc.ForceServerCodec(rpc.RawCodec{}))
		srv.RegisterService(&rpc.EchoDesc, struct{}{})
		c.Point("listening")
		return srv.Serve(ln)
	case "uds":
		ln, err := net.Listen("unix", filepath.Join(dir, "uds.sock"))
		if err != nil {
			return err
		}
		c.Point("listening")
		for {
			conn, err := ln.Accept()
			if err != nil {
				return err
			}
			go serveUDS(conn)
		}
	}
	return fmt.Errorf("unknown transport %q", transport)
}

// serveUDS echoes length-prefixed messages on one connection until it ends.
func serveUDS(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	buf := make([]byte, 4, 4+msgSize)
	for {
		if _, err := io.ReadFull(r, buf[:4]); err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(buf[:4])
		if n > 1<<20 {
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

// caller makes one call: it appends the reply to dst. A caller is safe for concurrent use
// if the transport is (broker and grpc are; uds is not).
type caller func(ctx context.Context, dst, req []byte) ([]byte, error)

// testDir is a fresh directory under /dev/shm (broker segments and sockets), removed after
// the server child is killed and reaped (cleanups run last-registered first).
func testDir(tb testing.TB) string {
	tb.Helper()
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	d, err := os.MkdirTemp(base, "rpc-bench-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	dirsMu.Lock()
	dirs = append(dirs, d)
	dirsMu.Unlock()
	return d
}

// start runs a server child for transport and connects to it; the connection is closed,
// the child killed and reaped and the directory removed in tb.Cleanup.
func start(tb testing.TB, transport string, workers int) caller {
	tb.Helper()
	dir := testDir(tb)
	srv := proctest.Start(tb, "server", proctest.Options{Args: []string{transport, dir, strconv.Itoa(workers)}})
	srv.WaitPoint("listening", procTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	switch transport {
	case "broker":
		conn, err := broker.Dial(ctx, brokerName, broker.Options{Dir: dir})
		if err != nil {
			tb.Fatal(err)
		}
		cl := broker.NewClient(conn)
		tb.Cleanup(func() { cl.Close() })
		return cl.CallAppend
	case "grpc":
		cc, err := grpc.NewClient("unix://"+filepath.Join(dir, "grpc.sock"),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rpc.RawCodec{})))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { cc.Close() })
		return func(ctx context.Context, dst, req []byte) ([]byte, error) {
			reply := dst
			err := cc.Invoke(ctx, rpc.EchoMethod, &req, &reply)
			return reply, err
		}
	case "uds":
		conn, err := net.Dial("unix", filepath.Join(dir, "uds.sock"))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { conn.Close() })
		r := bufio.NewReader(conn)
		var out []byte
		var hdr [4]byte
		return func(_ context.Context, dst, req []byte) ([]byte, error) {
			out = binary.LittleEndian.AppendUint32(out[:0], uint32(len(req)))
			out = append(out, req...)
			if _, err := conn.Write(out); err != nil {
				return dst, err
			}
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return dst, err
			}
			n := int(binary.LittleEndian.Uint32(hdr[:]))
			if n > 1<<20 {
				return dst, errors.New("uds: reply too long")
			}
			start := len(dst)
			dst = append(dst, make([]byte, n)...)
			_, err := io.ReadFull(r, dst[start:])
			return dst, err
		}
	}
	tb.Fatalf("unknown transport %q", transport)
	return nil
}

var transports = []string{"broker", "grpc", "uds"}

// parallelTransports are those measured with concurrent callers on one connection.
var parallelTransports = []string{"broker", "grpc"}

// roundTrips makes n calls with one caller and returns the latency of each.
func roundTrips(tb testing.TB, call caller, n int, loop func() bool) *hdrhistogram.Histogram {
	ctx := context.Background()
	req := bytes.Repeat([]byte{0x5a}, msgSize)
	buf := make([]byte, 0, msgSize)
	h := hdrhistogram.New(1, int64(10*time.Second), 3)
	for i := 0; loop == nil && i < n || loop != nil && loop(); i++ {
		t0 := time.Now()
		reply, err := call(ctx, buf[:0], req)
		d := time.Since(t0)
		if err != nil {
			tb.Fatal(err)
		}
		if !bytes.Equal(reply, req) {
			tb.Fatalf("reply %x, want %x", reply, req)
		}
		_ = h.RecordValue(int64(d))
	}
	return h
}

// concurrentCalls makes n calls in all from callers goroutines at once.
func concurrentCalls(tb testing.TB, call caller, callers, n int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for g := range callers {
		wg.Go(func() {
			req := bytes.Repeat([]byte{byte(g)}, msgSize)
			buf := make([]byte, 0, msgSize)
			for next.Add(1) <= int64(n) {
				reply, err := call(context.Background(), buf[:0], req)
				if err == nil && !bytes.Equal(reply, req) {
					err = fmt.Errorf("caller %d: reply %x, want %x", g, reply, req)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func warmUp(tb testing.TB, call caller) { roundTrips(tb, call, 1000, nil) }

// BenchmarkRoundTrip: one caller, one server worker (broker), 64 bytes each way.
func BenchmarkRoundTrip(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr, func(b *testing.B) {
			call := start(b, tr, 1)
			warmUp(b, call)
			b.ReportAllocs()
			h := roundTrips(b, call, 0, b.Loop)
			b.ReportMetric(float64(h.ValueAtQuantile(50)), "p50-ns")
			b.ReportMetric(float64(h.ValueAtQuantile(99)), "p99-ns")
		})
	}
}

// BenchmarkParallel8: 8 callers at once on one connection (broker: 4 server workers; gRPC
// runs each call on a goroutine of its own); ns/op is per call.
func BenchmarkParallel8(b *testing.B) {
	for _, tr := range parallelTransports {
		b.Run(tr, func(b *testing.B) {
			call := start(b, tr, 4)
			warmUp(b, call)
			b.ReportAllocs()
			b.ResetTimer()
			concurrentCalls(b, call, 8, b.N)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}

// TestBenchmarksRun runs what the benchmarks run, briefly, so CI proves every transport
// works across processes: replies match, the children start and are reaped, nothing is
// left under /dev/shm.
func TestBenchmarksRun(t *testing.T) {
	for _, tr := range transports {
		t.Run("RoundTrip/"+tr, func(t *testing.T) {
			h := roundTrips(t, start(t, tr, 1), 200, nil)
			if h.TotalCount() != 200 {
				t.Fatalf("recorded %d calls, want 200", h.TotalCount())
			}
			t.Logf("%s: p50 %v over %d calls", tr, time.Duration(h.ValueAtQuantile(50)), h.TotalCount())
		})
	}
	for _, tr := range parallelTransports {
		t.Run("Parallel8/"+tr, func(t *testing.T) {
			concurrentCalls(t, start(t, tr, 4), 8, 800)
		})
	}
}

// TestNothingLeft checks that the directories of a run's servers are gone after its
// cleanups (proctest has killed and reaped the children by then).
func TestNothingLeft(t *testing.T) {
	before := len(dirsMade())
	t.Run("run", func(t *testing.T) {
		for _, tr := range transports {
			roundTrips(t, start(t, tr, 1), 10, nil)
		}
	})
	made := dirsMade()[before:]
	if len(made) != len(transports) {
		t.Fatalf("made %d directories, want %d", len(made), len(transports))
	}
	for _, d := range made {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", d, err)
		}
	}
}

var (
	dirsMu sync.Mutex
	dirs   []string
)

func dirsMade() []string {
	dirsMu.Lock()
	defer dirsMu.Unlock()
	return append([]string(nil), dirs...)
}
