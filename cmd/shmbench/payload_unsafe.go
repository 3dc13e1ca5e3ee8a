//go:build linux

package main

import "unsafe"

// payloadBytes returns the bytes of a byte array of any length (the P of fixedMsg[P]).
//
// Correctness: P is always a [N]byte (fixedMsg is instantiated with byte arrays only), so
// its size is its length and the pointer covers exactly that many bytes.
func payloadBytes[P any](p *P) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p))
}
