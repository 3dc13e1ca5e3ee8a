// Package rpcbench measures request-response between two processes: calls per second and
// round-trip latency percentiles of one transport, the server in one process and the
// callers in another, both the running binary re-executed. It is shared by shmbench's rpc
// scenario (shmq and a Unix socket) and by the bench/rpc module's command, which adds gRPC
// (a module of its own, so that the core module never depends on gRPC) and runs all
// three in the same run.
//
// A binary that uses Run must call ChildMain first thing in main (and in TestMain), with
// the same transports: the children are that binary. Linux only.
package rpcbench
