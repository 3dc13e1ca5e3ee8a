//go:build linux

package main

import "github.com/shmq/shmq/internal/rpcbench"

// ChildMainForTest runs a case's child process, as main does.
func ChildMainForTest() bool { return rpcbench.ChildMain(transports()...) }
