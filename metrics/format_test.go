package metrics

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func sampleSchema() []Desc {
	return []Desc{
		{Name: "bus_published_total", Type: TypeCounter, Help: "events published", Unit: "events"},
		{Name: "bus_delivered_total", Type: TypeCounter, Help: "events delivered", Labels: []Label{{"subscription", "audit"}, {"mode", "reliable"}}},
		{Name: "bus_delivered_total", Type: TypeCounter, Help: "events delivered", Labels: []Label{{"subscription", "store"}, {"mode", "best_effort"}}},
		{Name: "bus_queue_depth", Type: TypeGauge, Help: "events queued"},
		{Name: "bus_delivery_latency", Type: TypeHistogram, Unit: "nanoseconds", Lowest: 1, Highest: 60e9, Digits: 3},
		{Name: "x:y", Type: TypeHistogram, Help: "ünïcode", Labels: []Label{{"k", "v\"\n"}}, Lowest: 1000, Highest: 1 << 40, Digits: 1},
	}
}

func mustPrepare(t testing.TB, schema []Desc) prepared {
	t.Helper()
	p, err := prepare(schema)
	require.NoError(t, err)
	return p
}

func TestSchemaRoundTrip(t *testing.T) {
	p := mustPrepare(t, sampleSchema())
	got, geoms, err := decodeSchema(p.encoded)
	require.NoError(t, err)
	require.Equal(t, p.schema, got)
	require.Equal(t, p.geoms, geoms)
	// Labels are stored sorted by key, whatever order they were given in.
	require.Equal(t, []Label{{"mode", "reliable"}, {"subscription", "audit"}}, got[1].Labels)
	require.Equal(t, `bus_delivered_total{mode="reliable",subscription="audit"}`, got[1].ID())
}

// TestSchemaDecodeRefuses: every cut of a valid encoding, bytes after it, and encodings
// whose fields break the rules are ErrCorrupt.
func TestSchemaDecodeRefuses(t *testing.T) {
	enc := mustPrepare(t, sampleSchema()).encoded
	for n := range len(enc) {
		_, _, err := decodeSchema(enc[:n])
		require.ErrorIs(t, err, ErrCorrupt, "cut at %d", n)
	}
	_, _, err := decodeSchema(append(bytes.Clone(enc), 0))
	require.ErrorIs(t, err, ErrCorrupt)

	one := func(d Desc) []byte { return encodeSchema([]Desc{d}) }
	for name, b := range map[string][]byte{
		"no series":      {0, 0, 0, 0},
		"huge count":     {0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0},
		"unknown type":   one(Desc{Name: "a", Type: 9}),
		"bad name":       one(Desc{Name: "1a", Type: TypeCounter}),
		"bad label key":  one(Desc{Name: "a", Type: TypeCounter, Labels: []Label{{"__x", "v"}}}),
		"unsorted":       one(Desc{Name: "a", Type: TypeCounter, Labels: []Label{{"b", ""}, {"a", ""}}}),
		"bad utf-8":      one(Desc{Name: "a", Type: TypeCounter, Help: "\xff"}),
		"histogram zero": one(Desc{Name: "a", Type: TypeHistogram}),
		"histogram huge": one(Desc{Name: "a", Type: TypeHistogram, Lowest: 1, Highest: 1 << 62, Digits: 5}),
		"duplicate":      encodeSchema([]Desc{{Name: "a", Type: TypeCounter}, {Name: "a", Type: TypeCounter}}),
		"family types":   encodeSchema([]Desc{{Name: "a", Type: TypeCounter}, {Name: "a", Type: TypeGauge, Labels: []Label{{"k", "v"}}}}),
	} {
		_, _, err := decodeSchema(b)
		require.ErrorIs(t, err, ErrCorrupt, name)
	}
	// A counter encoded with a histogram's range fields after it: trailing bytes.
	b := append(one(Desc{Name: "a", Type: TypeCounter}), make([]byte, 17)...)
	_, _, err = decodeSchema(b)
	require.ErrorIs(t, err, ErrCorrupt)
}

// TestPrepareRefuses: Create's checks, with ErrInvalidDesc.
func TestPrepareRefuses(t *testing.T) {
	long := string(bytes.Repeat([]byte("a"), MaxNameLen+1))
	for name, schema := range map[string][]Desc{
		"empty":          nil,
		"no name":        {{Type: TypeCounter}},
		"long name":      {{Name: long, Type: TypeCounter}},
		"no type":        {{Name: "a"}},
		"gauge range":    {{Name: "a", Type: TypeGauge, Highest: 10}},
		"duplicate":      {{Name: "a", Type: TypeCounter}, {Name: "a", Type: TypeCounter}},
		"same labels":    {{Name: "a", Type: TypeCounter, Labels: []Label{{"x", "1"}, {"y", "2"}}}, {Name: "a", Type: TypeCounter, Labels: []Label{{"y", "2"}, {"x", "1"}}}},
		"label twice":    {{Name: "a", Type: TypeCounter, Labels: []Label{{"x", "1"}, {"x", "2"}}}},
		"label le":       {{Name: "a", Type: TypeHistogram, Lowest: 1, Highest: 10, Digits: 1, Labels: []Label{{"le", "1"}}}},
		"family help":    {{Name: "a", Type: TypeCounter, Help: "x"}, {Name: "a", Type: TypeCounter, Help: "y", Labels: []Label{{"k", "v"}}}},
		"help newline":   {{Name: "a", Type: TypeCounter, Help: "x\ny"}},
		"unit":           {{Name: "a", Type: TypeCounter, Unit: "m/s"}},
		"digits":         {{Name: "a", Type: TypeHistogram, Lowest: 1, Highest: 10, Digits: 6}},
		"low highest":    {{Name: "a", Type: TypeHistogram, Lowest: 10, Highest: 19, Digits: 1}},
		"too many":       make([]Desc, MaxSeries+1),
		"too many label": {{Name: "a", Type: TypeCounter, Labels: make([]Label, MaxLabels+1)}},
	} {
		_, err := prepare(schema)
		require.ErrorIs(t, err, ErrInvalidDesc, name)
	}
}

// FuzzDecodeSchema: no input makes the decoder panic, and whatever it accepts is a
// canonical encoding (re-encoding gives the same bytes) whose layout can be computed.
func FuzzDecodeSchema(f *testing.F) {
	f.Add(mustPrepare(f, sampleSchema()).encoded)
	f.Add(mustPrepare(f, []Desc{{Name: "a", Type: TypeCounter}}).encoded)
	f.Add(mustPrepare(f, []Desc{{Name: "h", Type: TypeHistogram, Lowest: 1, Highest: 100, Digits: 2}}).encoded)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		schema, geoms, err := decodeSchema(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if again := encodeSchema(schema); !bytes.Equal(again, b) {
			t.Fatalf("accepted a non-canonical encoding:\n%x\nre-encodes as\n%x", b, again)
		}
		_, end := layoutOf(schema, geoms, len(b))
		if end == 0 {
			t.Fatal("empty layout")
		}
	})
}
