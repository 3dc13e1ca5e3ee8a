package metrics

// SeriesOffsets returns where the series id keeps its values in the data region: its
// block and, for a histogram, its counts. Tests corrupt values through the file with them.
func SeriesOffsets(s *Set, id string) (block, counts int) {
	l := s.series[s.byID[id]]
	return l.off, l.countsOff
}

// SchemaParam is the descriptor parameter that stores a schema's length and checksum.
func SchemaParam(schema []byte) uint64 { return schemaParam(schema) }

// EncodeSchema encodes a schema without checking it, as a broken creator might.
func EncodeSchema(schema []Desc) []byte { return encodeSchema(schema) }

const (
	FormatVersion = formatVersion
	OffState      = offState
	StateReady    = stateReady
)
