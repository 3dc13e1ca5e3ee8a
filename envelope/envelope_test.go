package envelope

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func sample(t testing.TB) Header {
	h, err := NewHeader("sensor.Reading", "capture")
	require.NoError(t, err)
	h.Correlation = "req-42"
	h.Priority = Low
	h.Attempt = 3
	h.Meta = []KV{{"trace", "abc"}, {"", ""}, {"k", strings.Repeat("v", 300)}}
	return h
}

func TestRoundTrip(t *testing.T) {
	h := sample(t)
	payload := []byte("hello, payload")
	b, err := h.Append(nil, payload)
	require.NoError(t, err)
	n, err := h.Size(len(payload))
	require.NoError(t, err)
	require.Len(t, b, n)

	v, err := Parse(append(b, 0xff, 0xff)) // bytes after the payload are ignored
	require.NoError(t, err)
	require.Equal(t, payload, v.Payload())
	require.Equal(t, h.ID, v.ID)
	require.True(t, v.IsType("sensor.Reading"))
	require.False(t, v.IsType("sensor.Readings"))
	require.Equal(t, TypeID("sensor.Reading"), v.TypeID)
	got := v.Header()
	require.Equal(t, h.Time.UnixNano(), got.Time.UnixNano())
	got.Time = h.Time
	require.Equal(t, h, got)
	val, ok := v.Meta("k")
	require.True(t, ok)
	require.Equal(t, strings.Repeat("v", 300), string(val))
	_, ok = v.Meta("missing")
	require.False(t, ok)
}

func TestPayloadAligned(t *testing.T) {
	for n := 0; n < 20; n++ {
		h := Header{ID: uuid.New(), Type: strings.Repeat("t", n), Source: strings.Repeat("s", n%3)}
		size, err := h.Size(8)
		require.NoError(t, err)
		b := make([]byte, size)
		p, err := h.Put(b, 8)
		require.NoError(t, err)
		off := size - len(p)
		require.Zero(t, off%8, "payload offset %d for type of %d bytes", off, n)
	}
}

func TestIDsAreTimeOrdered(t *testing.T) {
	prev, err := NewHeader("t", "s")
	require.NoError(t, err)
	for range 1000 {
		h, err := NewHeader("t", "s")
		require.NoError(t, err)
		require.Equal(t, uuid.Version(7), h.ID.Version())
		require.Positive(t, strings.Compare(h.ID.String(), prev.ID.String()), "UUIDv7 ids sort in creation order")
		prev = h
	}
}

func TestTooLarge(t *testing.T) {
	long := strings.Repeat("x", 1<<16)
	for name, h := range map[string]Header{
		"type":   {Type: long},
		"source": {Source: long},
		"corr":   {Correlation: long},
		"key":    {Meta: []KV{{Key: long}}},
		"value":  {Meta: []KV{{Value: long}}},
		"header": {Type: long[:40000], Source: long[:40000]},
	} {
		_, err := h.Size(0)
		require.ErrorIs(t, err, ErrTooLarge, name)
		_, err = h.Put(make([]byte, 1<<18), 0)
		require.ErrorIs(t, err, ErrTooLarge, name)
	}
	h := Header{}
	_, err := h.Size(maxTotal)
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = h.Put(make([]byte, 64), 9)
	require.ErrorIs(t, err, ErrShort)
}

func TestParseRejects(t *testing.T) {
	h := sample(t)
	good, err := h.Append(nil, []byte("payload"))
	require.NoError(t, err)
	le := binary.LittleEndian
	for _, c := range []struct {
		name string
		edit func(b []byte) []byte
		want error
	}{
		{"short", func(b []byte) []byte { return b[:HeaderSize-1] }, ErrMalformed},
		{"version", func(b []byte) []byte { b[0] = 2; return b }, ErrVersion},
		{"priority", func(b []byte) []byte { b[1] = 3; return b }, ErrMalformed},
		{"flags", func(b []byte) []byte { le.PutUint32(b[52:], 1); return b }, ErrMalformed},
		{"offset", func(b []byte) []byte { le.PutUint16(b[2:], le.Uint16(b[2:])+8); return b }, ErrMalformed},
		{"type length", func(b []byte) []byte { le.PutUint16(b[36:], le.Uint16(b[36:])+1); return b }, ErrMalformed},
		{"payload past end", func(b []byte) []byte { le.PutUint32(b[48:], le.Uint32(b[48:])+1); return b }, ErrMalformed},
		{"huge payload", func(b []byte) []byte { le.PutUint32(b[48:], 0xffffffff); return b }, ErrMalformed},
		{"meta count", func(b []byte) []byte { le.PutUint16(b[42:], le.Uint16(b[42:])+1); return b }, ErrMalformed},
		{"meta count low", func(b []byte) []byte { le.PutUint16(b[42:], le.Uint16(b[42:])-1); return b }, ErrMalformed},
		{"meta entry", func(b []byte) []byte {
			p := HeaderSize + int(le.Uint16(b[36:])+le.Uint16(b[38:])+le.Uint16(b[40:]))
			le.PutUint16(b[p:], 500)
			return b
		}, ErrMalformed},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.edit(append([]byte(nil), good...)))
			require.ErrorIs(t, err, c.want)
		})
	}
	_, err = Parse(good)
	require.NoError(t, err)
}

func TestAllocs(t *testing.T) {
	h := Header{ID: uuid.New(), Time: time.Now(), Type: "t", Source: "s", Priority: Normal, Attempt: 1, Meta: []KV{{"a", "b"}}}
	buf := make([]byte, 256)
	var v View
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := h.Put(buf, 64); err != nil {
			t.Fatal(err)
		}
		var err error
		if v, err = Parse(buf); err != nil {
			t.Fatal(err)
		}
		if _, ok := v.Meta("a"); !ok || !v.IsType("t") {
			t.Fatal("lost a field")
		}
	})
	require.Zero(t, allocs)
}

func FuzzParse(f *testing.F) {
	h := sample(f)
	good, _ := h.Append(nil, []byte("payload"))
	f.Add(good)
	f.Add(good[:HeaderSize])
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// What parsed must encode back to the same bytes up to the end of the payload,
		// padding excepted (Put zeroes it; a peer may not have).
		hd := v.Header()
		again, err := hd.Append(nil, v.Payload())
		if err != nil {
			t.Fatalf("parsed header does not encode: %v", err)
		}
		v2, err := Parse(again)
		if err != nil {
			t.Fatalf("re-encoded envelope does not parse: %v", err)
		}
		if v2.ID != v.ID || string(v2.Payload()) != string(v.Payload()) || string(v2.Type()) != string(v.Type()) || v2.MetaLen() != v.MetaLen() {
			t.Fatal("round trip changed the envelope")
		}
	})
}

func TestIDsOrderedUniqueNoAllocs(t *testing.T) {
	var g IDs
	seen := map[uuid.UUID]bool{}
	prev := uuid.UUID{}
	for i := range 20000 {
		id, err := g.New(time.Now())
		require.NoError(t, err)
		require.Equal(t, uuid.Version(7), id.Version())
		require.Equal(t, uuid.RFC4122, id.Variant())
		require.False(t, seen[id], "id %d repeated", i)
		seen[id] = true
		require.Positive(t, strings.Compare(id.String(), prev.String()), "id %d not after the one before", i)
		prev = id
	}
	now := time.Now() // one millisecond: at most one uuid.NewV7 per 4,096 ids
	allocs := testing.AllocsPerRun(4000, func() {
		if _, err := g.New(now); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}
