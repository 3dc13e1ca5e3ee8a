// Package rpc measures request-response round trips between two processes over three
// transports in the same run: shmq's broker (shared-memory rings), gRPC on a Unix socket,
// and a plain Unix socket with a 4-byte length prefix. It is a module of its own so that
// the core module never depends on gRPC; everything is in its tests:
//
//	cd bench/rpc && go test -run '^$' -bench . -benchtime 2s
package rpc
