package metrics

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Type is what a series records: a Counter, a Gauge or a Histogram.
type Type uint8

// The series types. Their numbers are part of the stored schema.
const (
	TypeCounter   Type = 1 // uint64 that only grows (modulo 2^64): Counter.Add
	TypeGauge     Type = 2 // int64 set or moved either way: Gauge.Set, Gauge.Add
	TypeHistogram Type = 3 // HdrHistogram bucket counts: Histogram.Record
)

var typeNames = map[Type]string{TypeCounter: "counter", TypeGauge: "gauge", TypeHistogram: "histogram"}

// String returns "counter", "gauge", "histogram", or "type(N)" for another value.
func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// MarshalText encodes t as its String, for JSON.
func (t Type) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText is the inverse of MarshalText; an unknown name is an ErrInvalidDesc error.
func (t *Type) UnmarshalText(b []byte) error {
	for k, n := range typeNames {
		if n == string(b) {
			*t = k
			return nil
		}
	}
	return fmt.Errorf("%w: unknown series type %q", ErrInvalidDesc, b)
}

// Label is a constant label of a series: a key and its value, fixed when the set is created
// (a subscription's name, say). Series that share a Name and differ in their labels form one
// family, as in Prometheus.
type Label struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Labels pairs up keys and values: Labels("sub", "audit", "mode", "reliable"). An odd
// number of strings is a bug of the caller and panics.
func Labels(kv ...string) []Label {
	if len(kv)%2 != 0 {
		panic("metrics: Labels with an odd number of strings")
	}
	ls := make([]Label, len(kv)/2)
	for i := range ls {
		ls[i] = Label{Key: kv[2*i], Value: kv[2*i+1]}
	}
	return ls
}

// Desc describes one series of a set. A set's descriptions are fixed when it is created and
// stored in the segment; every process that opens the set sees the same ones.
type Desc struct {
	// Name is the series' name, [a-zA-Z_:][a-zA-Z0-9_:]*, at most MaxNameLen bytes (the
	// Prometheus metric-name syntax). Names and labels are the contract between the processes
	// that record and those that read: the layer that creates the set defines them.
	Name string `json:"name"`
	// Type is TypeCounter, TypeGauge or TypeHistogram.
	Type Type `json:"type"`
	// Help is a one-line description, valid UTF-8 without newlines, at most MaxHelpLen bytes.
	Help string `json:"help,omitempty"`
	// Unit names what the values count ("nanoseconds", "bytes", "events"): [a-zA-Z0-9_]*,
	// at most MaxUnitLen bytes. It is stored and shown, never converted.
	Unit string `json:"unit,omitempty"`
	// Labels are constant labels: keys [a-zA-Z_][a-zA-Z0-9_]* not starting with "__" and
	// other than "le" and "quantile" (reserved by Prometheus' exposition), each key at most
	// once; values valid UTF-8 of at most MaxLabelValueLen bytes. At most MaxLabels. Their
	// order does not matter: Create stores them sorted by key.
	Labels []Label `json:"labels,omitempty"`

	// Lowest, Highest and Digits are a histogram's range and precision, as
	// hdrhistogram.New takes them: values from 0 to at least Highest are recorded, in
	// buckets that keep Digits significant decimal digits (1 to 5) of every value above
	// Lowest (the smallest value told apart from 0, at least 1). Highest must be at least
	// 2*Lowest. Zero for counters and gauges.
	Lowest  int64 `json:"lowest,omitempty"`
	Highest int64 `json:"highest,omitempty"`
	Digits  int   `json:"digits,omitempty"`
}

// Limits of a set's schema. A description beyond them is refused with ErrInvalidDesc by
// Create, and a stored schema beyond them is ErrCorrupt.
const (
	MaxSeries        = 4096
	MaxNameLen       = 128
	MaxHelpLen       = 1024
	MaxUnitLen       = 32
	MaxLabels        = 16
	MaxLabelKeyLen   = 64
	MaxLabelValueLen = 256
	// MaxBuckets bounds one histogram's bucket count (8 bytes each in the segment):
	// 1 ns to one hour at 3 digits takes 33,792.
	MaxBuckets = 1 << 20
)

// ID is the series' identity within its set: the name followed by the labels sorted by key,
// name{key="value",...} with values quoted as Go strings (the form Prometheus shows). Two
// descriptions with the same ID cannot be in one set.
func (d Desc) ID() string { return seriesID(d.Name, d.Labels) }

func seriesID(name string, labels []Label) string {
	if len(labels) == 0 {
		return name
	}
	ls := slices.Clone(labels)
	sortLabels(ls)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Key)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(l.Value))
	}
	b.WriteByte('}')
	return b.String()
}

func sortLabels(ls []Label) {
	slices.SortFunc(ls, func(a, b Label) int { return cmp.Compare(a.Key, b.Key) })
}

// normalized returns a copy of d with its labels sorted by key, the form stored.
func (d Desc) normalized() Desc {
	d.Labels = slices.Clone(d.Labels)
	if len(d.Labels) == 0 {
		d.Labels = nil
	}
	sortLabels(d.Labels)
	return d
}

// validate checks one description against the rules of Desc (labels already sorted) and
// returns its histogram geometry (zero for other types). The error says what is wrong,
// without a sentinel: the caller wraps it in ErrInvalidDesc or ErrCorrupt.
func (d Desc) validate() (geometry, error) {
	if !validName(d.Name, true) || len(d.Name) > MaxNameLen {
		return geometry{}, fmt.Errorf("series name %q: want [a-zA-Z_:][a-zA-Z0-9_:]*, at most %d bytes", d.Name, MaxNameLen)
	}
	if len(d.Help) > MaxHelpLen || !utf8.ValidString(d.Help) || strings.ContainsAny(d.Help, "\n\r") {
		return geometry{}, fmt.Errorf("series %s: help must be one line of UTF-8, at most %d bytes", d.Name, MaxHelpLen)
	}
	if len(d.Unit) > MaxUnitLen || strings.IndexFunc(d.Unit, func(r rune) bool { return !isWordRune(r, true) }) >= 0 {
		return geometry{}, fmt.Errorf("series %s: unit %q: want [a-zA-Z0-9_]*, at most %d bytes", d.Name, d.Unit, MaxUnitLen)
	}
	if len(d.Labels) > MaxLabels {
		return geometry{}, fmt.Errorf("series %s: %d labels, at most %d", d.Name, len(d.Labels), MaxLabels)
	}
	for i, l := range d.Labels {
		switch {
		case !validName(l.Key, false) || len(l.Key) > MaxLabelKeyLen || strings.HasPrefix(l.Key, "__") || l.Key == "le" || l.Key == "quantile":
			return geometry{}, fmt.Errorf("series %s: label key %q: want [a-zA-Z_][a-zA-Z0-9_]*, at most %d bytes, not __*, le or quantile", d.Name, l.Key, MaxLabelKeyLen)
		case len(l.Value) > MaxLabelValueLen || !utf8.ValidString(l.Value):
			return geometry{}, fmt.Errorf("series %s: label %s: value must be UTF-8, at most %d bytes", d.Name, l.Key, MaxLabelValueLen)
		case i > 0 && d.Labels[i-1].Key >= l.Key:
			return geometry{}, fmt.Errorf("series %s: label key %q given twice or out of order", d.Name, l.Key)
		}
	}
	switch d.Type {
	case TypeCounter, TypeGauge:
		if d.Lowest != 0 || d.Highest != 0 || d.Digits != 0 {
			return geometry{}, fmt.Errorf("series %s: a %v has no histogram range", d.Name, d.Type)
		}
		return geometry{}, nil
	case TypeHistogram:
		g, err := newGeometry(d.Lowest, d.Highest, d.Digits)
		if err != nil {
			return geometry{}, fmt.Errorf("series %s: %w", d.Name, err)
		}
		return g, nil
	}
	return geometry{}, fmt.Errorf("series %s: unknown type %v", d.Name, d.Type)
}

// validName reports whether s is a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*, colon allowed) or
// a label key ([a-zA-Z_][a-zA-Z0-9_]*).
func validName(s string, colon bool) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r >= '0' && r <= '9' {
			if i == 0 {
				return false
			}
			continue
		}
		if !isWordRune(r, false) && (!colon || r != ':') {
			return false
		}
	}
	return true
}

func isWordRune(r rune, digits bool) bool {
	return r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || digits && r >= '0' && r <= '9'
}

// checkSchema validates a whole schema (each description normalized already): every
// description, unique IDs, and families (series of one name) that agree on type, help and
// unit. It returns the histogram geometries by index.
func checkSchema(schema []Desc) ([]geometry, error) {
	if len(schema) == 0 || len(schema) > MaxSeries {
		return nil, fmt.Errorf("%d series: want 1 to %d", len(schema), MaxSeries)
	}
	geoms := make([]geometry, len(schema))
	ids := make(map[string]bool, len(schema))
	families := make(map[string]int, len(schema))
	for i, d := range schema {
		g, err := d.validate()
		if err != nil {
			return nil, err
		}
		geoms[i] = g
		id := d.ID()
		if ids[id] {
			return nil, fmt.Errorf("series %s described twice", id)
		}
		ids[id] = true
		if j, ok := families[d.Name]; ok {
			f := schema[j]
			if f.Type != d.Type || f.Help != d.Help || f.Unit != d.Unit {
				return nil, fmt.Errorf("series %s and %s: one family (name) must agree on type, help and unit", f.ID(), id)
			}
		} else {
			families[d.Name] = i
		}
	}
	return geoms, nil
}
