// Package rpc measures request-response round trips between two processes over three
// transports in the same run: shmq's broker (shared-memory rings), gRPC on a Unix socket,
// and a plain Unix socket with a 4-byte length prefix. It is a module of its own so that
// the core module never depends on gRPC. GRPC is the gRPC transport of the core's
// internal/rpcbench runner (shmbench's rpc scenario); the command runs that scenario over
// all three transports, and the benchmarks measure the same calls with go test:
//
//	cd bench/rpc && go run ./cmd/rpcbench --duration 2s --runs 3
//	cd bench/rpc && go test -run '^$' -bench . -benchtime 2s
package rpc
