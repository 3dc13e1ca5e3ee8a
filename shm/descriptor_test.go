package shm_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// goldenDescriptor is the descriptor stored in testdata/descriptor-v1.golden.
var goldenDescriptor = shm.Descriptor{
	VersionMajor: 1, VersionMinor: 0,
	Kind:       shm.KindMPMC,
	HeaderSize: layout.DataOffset, DataOffset: layout.DataOffset,
	DataSize: 1 << 20, SlotSize: 256, SlotCount: 4096,
	PeerCount: layout.PeerCount, PeerTableOffset: layout.PeerTableOffset, PeerEntrySize: layout.PeerEntrySize,
	CreatorPID: 4242,
	Created:    time.Unix(0, 1_790_000_000_123_456_789),
}

// TestDescriptorGolden pins layout version 1 byte for byte: if an offset, the byte order
// or the checksum changes, segments written by released code would no longer open.
func TestDescriptorGolden(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("..", "testdata", "descriptor-v1.golden"))
	require.NoError(t, err)
	got, err := goldenDescriptor.MarshalBinary()
	require.NoError(t, err)
	assert.Equal(t, golden, got)

	d, err := shm.DecodeDescriptor(golden)
	require.NoError(t, err)
	assert.True(t, d.Created.Equal(goldenDescriptor.Created))
	d.Created = goldenDescriptor.Created
	assert.Equal(t, goldenDescriptor, d)
}

// FuzzDecodeDescriptor: whatever the bytes, decoding returns a descriptor or one of the
// documented sentinel errors, never panics, and a descriptor it accepts survives a round trip.
// Seeds are in testdata/fuzz/FuzzDecodeDescriptor.
func FuzzDecodeDescriptor(f *testing.F) {
	good, _ := goldenDescriptor.MarshalBinary()
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := shm.DecodeDescriptor(b)
		if err != nil {
			for _, want := range []error{shm.ErrTruncated, shm.ErrNotSegment, shm.ErrVersion, shm.ErrCorrupt, shm.ErrKind} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("undocumented error: %v", err)
		}
		if d.FileSize() < d.DataOffset || d.DataSize&(d.DataSize-1) != 0 {
			t.Fatalf("accepted an impossible layout: %+v", d)
		}
		again, err := d.MarshalBinary()
		require.NoError(t, err)
		d2, err := shm.DecodeDescriptor(again)
		require.NoError(t, err)
		require.True(t, d.Created.Equal(d2.Created))
		d2.Created = d.Created
		require.Equal(t, d, d2)
	})
}
