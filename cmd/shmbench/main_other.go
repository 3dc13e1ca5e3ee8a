//go:build !linux

// Command shmbench needs Linux: shmq's segments use OFD locks, futexes and renameat2.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "shmbench: Linux only")
	os.Exit(1)
}
