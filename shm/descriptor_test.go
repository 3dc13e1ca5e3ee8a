package shm_test

import (
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/descriptor-v2.golden from goldenDescriptor")

// goldenDescriptor is the descriptor stored in testdata/descriptor-v2.golden.
var goldenDescriptor = shm.Descriptor{
	VersionMajor: 2, VersionMinor: 0,
	Kind:       2,
	HeaderSize: layout.DataOffset, DataOffset: layout.DataOffset,
	DataSize:        1 << 20,
	PeerTableOffset: layout.PeerTableOffset, PeerCount: layout.PeerCount, PeerEntrySize: layout.PeerEntrySize,
	KindHeaderOffset: layout.KindHeaderOffset, KindHeaderSize: layout.KindHeaderSize,
	Params:     [2]uint64{1, 256},
	CreatorPID: 4242,
	Created:    time.Unix(0, 1_790_000_000_123_456_789),
}

// descriptorV1 is a layout-1 descriptor as released code wrote it (the former
// testdata/descriptor-v1.golden): an MPMC ring of 1 MiB in 256-byte slots.
const descriptorV1 = "53484d515345470001000000020000000000000000000000008000000000000000800000000000000000100000000000" +
	"000100004000000000100000000000000010000000000000000100009210000015cd4e2b845bd7180000000000000000" +
	"00000000000000000000000000000000000000000000000000000000446ab2b0"

// TestDescriptorGolden pins layout version 2 byte for byte: if an offset, the byte order
// or the checksum changes, segments written by released code would no longer open.
func TestDescriptorGolden(t *testing.T) {
	path := filepath.Join("..", "testdata", "descriptor-v2.golden")
	got, err := goldenDescriptor.MarshalBinary()
	require.NoError(t, err)
	if *updateGolden {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	golden, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, golden, got)

	d, err := shm.DecodeDescriptor(golden)
	require.NoError(t, err)
	assert.True(t, d.Created.Equal(goldenDescriptor.Created))
	d.Created = goldenDescriptor.Created
	assert.Equal(t, goldenDescriptor, d)
}

// TestDecodeDescriptorV1: a descriptor of layout 1 is refused with ErrVersion, not misread.
func TestDecodeDescriptorV1(t *testing.T) {
	v1, err := hex.DecodeString(descriptorV1)
	require.NoError(t, err)
	require.Len(t, v1, layout.DescriptorSize)
	_, err = shm.DecodeDescriptor(v1)
	assert.ErrorIs(t, err, shm.ErrVersion)
	assert.Contains(t, err.Error(), "layout 1.0")
}

// TestKindRegistry: names come from RegisterKind; unregistered kinds print as kind(N), and
// ParseKind inverts String for both.
func TestKindRegistry(t *testing.T) {
	assert.Equal(t, "shmtest", testKind.String())
	assert.Equal(t, "kind(99)", shm.Kind(99).String())
	for _, k := range []shm.Kind{testKind, otherKind, 99} {
		got, err := shm.ParseKind(k.String())
		require.NoError(t, err, "%v", k)
		assert.Equal(t, k, got)
	}
	for _, bad := range []string{"", "nope", "kind(0)", "kind(x)", "kind(-1)", "kind(4294967296)"} {
		_, err := shm.ParseKind(bad)
		assert.ErrorIs(t, err, shm.ErrInvalidSpec, "%q", bad)
	}
	_, err := shm.ParseKind("nope")
	assert.Contains(t, err.Error(), "shmtest", "the error lists the registered names")

	assert.Panics(t, func() { shm.RegisterKind(0, "zero") })
	assert.Panics(t, func() { shm.RegisterKind(testKind, "again") })
	assert.Panics(t, func() { shm.RegisterKind(1000, "shmtest") })
	assert.Panics(t, func() { shm.RegisterKind(1001, "") })
	assert.Equal(t, "kind(1000)", shm.Kind(1000).String(), "a refused registration leaves nothing behind")
}

// FuzzDecodeDescriptor: whatever the bytes, decoding returns a descriptor or one of the
// documented sentinel errors, never panics, and a descriptor it accepts is a layout-2 one
// that survives a round trip. Seeds are in testdata/fuzz/FuzzDecodeDescriptor.
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
		if d.VersionMajor != layout.VersionMajor || d.Kind == 0 || d.DataOffset != layout.DataOffset ||
			d.KindHeaderOffset != layout.KindHeaderOffset || d.KindHeaderSize != layout.KindHeaderSize ||
			d.DataSize < layout.MinDataSize || d.DataSize&(d.DataSize-1) != 0 {
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

// TestDecodeDescriptorSeeds: each seed of the fuzz corpus fails (or passes) for the reason
// its name gives, so the corpus keeps covering every check of DecodeDescriptor.
func TestDecodeDescriptorSeeds(t *testing.T) {
	want := map[string]error{
		"valid": nil, "valid-unknown-kind": nil, "valid-params-max": nil, "long-input": nil,
		"kind-zero":       shm.ErrKind,
		"bad-checksum":    shm.ErrCorrupt,
		"bad-magic":       shm.ErrNotSegment,
		"cut-descriptor":  shm.ErrTruncated,
		"empty":           shm.ErrTruncated,
		"short-magic":     shm.ErrTruncated,
		"huge-peer-table": shm.ErrCorrupt, "kind-header-moved": shm.ErrCorrupt, "kind-header-huge": shm.ErrCorrupt,
		"size-not-pow2": shm.ErrCorrupt, "data-offset-v1": shm.ErrCorrupt,
		"version-1": shm.ErrVersion, "version-3": shm.ErrVersion,
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeDescriptor")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, len(want))
	for _, e := range entries {
		wantErr, ok := want[e.Name()]
		require.True(t, ok, "seed %s has no expectation", e.Name())
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		require.Len(t, lines, 2, e.Name())
		arg, ok := strings.CutPrefix(lines[1], "[]byte(")
		require.True(t, ok, e.Name())
		b, err := strconv.Unquote(strings.TrimSuffix(arg, ")"))
		require.NoError(t, err, e.Name())
		_, err = shm.DecodeDescriptor([]byte(b))
		if wantErr == nil {
			assert.NoError(t, err, e.Name())
		} else {
			assert.ErrorIs(t, err, wantErr, e.Name())
		}
	}
}
