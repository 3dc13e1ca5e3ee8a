//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"hash/crc32"

	"golang.org/x/sys/unix"
)

// Every benchmark message carries, little-endian:
//
//	[0:8)   sequence number (per writer, from 0)
//	[8:16)  CLOCK_MONOTONIC send time in ns (shared by all processes, unlike Go's own clock)
//	[16:20) writer id
//	[20:24) CRC32-C of every other byte of the message
//	[24:)   payload
const msgHeader = 24

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// monotonicNow reads CLOCK_MONOTONIC through the vDSO.
func monotonicNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// encode fills p (len >= msgHeader) as message seq of writer; pattern is copied as payload.
func encode(p []byte, seq uint64, writer uint32, sendNs int64, pattern []byte) {
	copy(p[msgHeader:], pattern)
	binary.LittleEndian.PutUint64(p[0:], seq)
	binary.LittleEndian.PutUint64(p[8:], uint64(sendNs))
	binary.LittleEndian.PutUint32(p[16:], writer)
	binary.LittleEndian.PutUint32(p[20:], checksum(p))
}

func checksum(p []byte) uint32 {
	c := crc32.Update(0, castagnoli, p[:20])
	return crc32.Update(c, castagnoli, p[msgHeader:])
}

var errCorrupt = errors.New("corrupt message")

// decode verifies p and returns its fields.
func decode(p []byte) (seq uint64, writer uint32, sendNs int64, err error) {
	if len(p) < msgHeader {
		return 0, 0, 0, errCorrupt
	}
	if binary.LittleEndian.Uint32(p[20:]) != checksum(p) {
		return 0, 0, 0, errCorrupt
	}
	return binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint32(p[16:]), int64(binary.LittleEndian.Uint64(p[8:])), nil
}
