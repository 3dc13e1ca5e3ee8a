package ring_test

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// testDir returns a private segment directory under /dev/shm, removed after the test.
func testDir(t testing.TB) string {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	d, err := os.MkdirTemp(base, "ring-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func newSegment(t testing.TB, dir, name string, spec ring.Spec) *shm.Segment {
	t.Helper()
	s, err := ring.Create(name, spec, shm.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Test messages carry their sequence number, a checksum and a length that varies with the
// sequence number, so a reader can verify every byte of every message and its order.
const msgHeader = 12

func msgLen(seq uint64, minLen, maxLen int) int {
	if maxLen <= minLen {
		return minLen
	}
	return minLen + int((seq*7919)%uint64(maxLen-minLen+1))
}

func fillMsg(p []byte, seq uint64) {
	binary.LittleEndian.PutUint64(p, seq)
	for i := msgHeader; i < len(p); i++ {
		p[i] = byte(seq*31 + uint64(i))
	}
	binary.LittleEndian.PutUint32(p[8:], crc32.Checksum(p[msgHeader:], castagnoli))
}

// batchType is the record type of messages written with ReserveBatch, whose records share
// one type: checkMsg does not compare it with the sequence number.
const batchType = ^uint32(0)

// checkMsg verifies a message and returns its sequence number.
func checkMsg(p []byte, typ uint32) (uint64, error) {
	if len(p) < msgHeader {
		return 0, fmt.Errorf("message of %d bytes is shorter than its header", len(p))
	}
	seq := binary.LittleEndian.Uint64(p)
	if sum := crc32.Checksum(p[msgHeader:], castagnoli); sum != binary.LittleEndian.Uint32(p[8:]) {
		return seq, fmt.Errorf("message %d: checksum mismatch", seq)
	}
	if typ != uint32(seq) && typ != batchType {
		return seq, fmt.Errorf("message %d: type %d", seq, typ)
	}
	return seq, nil
}
