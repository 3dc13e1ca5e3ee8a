//go:build linux

package rpc

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shmq/shmq/internal/rpcbench"
)

// GRPC is the rpcbench transport of gRPC unary calls on a Unix socket: a hand-written
// service description and a codec that carries raw bytes (no protobuf, no protoc), so that
// what is measured is gRPC itself. All callers share one client connection (HTTP/2 carries
// their calls at once); the server runs each call on a goroutine of its own.
func GRPC() rpcbench.Transport {
	return rpcbench.Transport{
		Name: "grpc",
		Serve: func(ctx context.Context, dir string, _ rpcbench.Options, ready func()) error {
			ln, err := net.Listen("unix", filepath.Join(dir, "grpc.sock"))
			if err != nil {
				return err
			}
			srv := grpc.NewServer(grpc.ForceServerCodec(RawCodec{}))
			srv.RegisterService(&EchoDesc, struct{}{})
			context.AfterFunc(ctx, srv.Stop)
			ready()
			return srv.Serve(ln)
		},
		Dial: func(ctx context.Context, dir string, n int, _ rpcbench.Options) ([]rpcbench.Caller, func(), error) {
			cc, err := grpc.NewClient("unix://"+filepath.Join(dir, "grpc.sock"),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.ForceCodec(RawCodec{})))
			if err != nil {
				return nil, nil, err
			}
			call := func(ctx context.Context, dst, req []byte) ([]byte, error) {
				reply := dst
				err := cc.Invoke(ctx, EchoMethod, &req, &reply)
				return reply, err
			}
			callers := make([]rpcbench.Caller, n)
			for i := range callers {
				callers[i] = call
			}
			return callers, func() { cc.Close() }, nil
		},
	}
}

// EchoMethod is the full name of the echo method.
const EchoMethod = "/shmq.bench.Echo/Echo"

// RawCodec lets gRPC carry *[]byte messages as they are.
type RawCodec struct{}

// Name is the codec's content subtype.
func (RawCodec) Name() string { return "raw" }

// Marshal returns the bytes v (a *[]byte) points to.
func (RawCodec) Marshal(v any) ([]byte, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return *p, nil
}

// Unmarshal copies data into v (a *[]byte): gRPC may reuse data once it returns.
func (RawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*p = append((*p)[:0], data...)
	return nil
}

// echoService is what an Echo server implements: nothing, the handler is the method.
type echoService interface{}

// EchoDesc describes the echo service: one unary method that returns its request.
var EchoDesc = grpc.ServiceDesc{
	ServiceName: "shmq.bench.Echo",
	HandlerType: (*echoService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			return &in, nil
		},
	}},
}
