package metrics

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shmq/shmq/internal/layout"
)

// Snapshot is every series of a set at one moment, copied into Go memory. Each value is
// read with one atomic load (a histogram's counts one bucket at a time), so a snapshot
// taken while others record is not a single instant across series or buckets: every value
// it shows was current at some moment during the call.
type Snapshot struct {
	Name   string    `json:"name"`  // the set's segment name
	Taken  time.Time `json:"taken"` // when the snapshot began
	Series []Series  `json:"series"`
}

// Series is one series of a Snapshot: its description and its value. Only the value field
// of the series' type is set.
type Series struct {
	Desc
	Counter   uint64             // TypeCounter
	Gauge     int64              // TypeGauge
	Histogram *HistogramSnapshot // TypeHistogram
}

// MarshalJSON encodes the description's fields, then "value" for a counter or gauge and
// "histogram" for a histogram: a stable interface (shmctl stat --json).
func (s Series) MarshalJSON() ([]byte, error) {
	v := struct {
		Desc
		Value     any                `json:"value,omitempty"`
		Histogram *HistogramSnapshot `json:"histogram,omitempty"`
	}{Desc: s.Desc, Histogram: s.Histogram}
	switch s.Type {
	case TypeCounter:
		v.Value = s.Counter
	case TypeGauge:
		v.Value = s.Gauge
	}
	return json.Marshal(v)
}

// HistogramSnapshot is a histogram series' state: its raw counts in HdrHistogram's layout
// and what hdrhistogram computes from them. The percentiles are the library's
// ValueAtQuantile; Min, Max and the percentiles are bucket values (equivalent to the
// recorded ones within the histogram's precision), 0 when nothing was recorded.
type HistogramSnapshot struct {
	Count      int64   `json:"count"`        // values recorded
	OutOfRange uint64  `json:"out_of_range"` // values refused (ErrOutOfRange)
	Min        int64   `json:"min"`
	Max        int64   `json:"max"`
	Mean       float64 `json:"mean"`
	StdDev     float64 `json:"stddev"`
	P50        int64   `json:"p50"`
	P90        int64   `json:"p90"`
	P95        int64   `json:"p95"`
	P99        int64   `json:"p99"`
	P999       int64   `json:"p999"`
	// Buckets are the non-empty buckets, lowest first: the values from From to To
	// (inclusive) were recorded Count times.
	Buckets []Bucket `json:"buckets"`
	// Counts is the counts array as hdrhistogram-go lays it out for the series' Lowest,
	// Highest and Digits; Histogram imports it.
	Counts []int64 `json:"-"`

	geom *geometry
}

// Bucket is a range of equivalent values and how often they were recorded.
type Bucket struct {
	From  int64 `json:"from"`
	To    int64 `json:"to"`
	Count int64 `json:"count"`
}

// Histogram returns a new hdrhistogram.Histogram holding the snapshot's counts
// (hdrhistogram.Import), for any query the library offers. The snapshot's counts passed
// hdrhistogram's Snapshot.Validate when it was taken.
func (h *HistogramSnapshot) Histogram() *hdrhistogram.Histogram {
	return hdrhistogram.Import(h.export())
}

func (h *HistogramSnapshot) export() *hdrhistogram.Snapshot {
	return &hdrhistogram.Snapshot{LowestTrackableValue: h.geom.lowest, HighestTrackableValue: h.geom.highest,
		SignificantFigures: int64(h.geom.digits), Counts: h.Counts}
}

// Snapshot reads every series of the set. Errors: ErrClosed; ErrCorrupt for histogram
// counts that are negative or sum past 2^63-1 (no correct recorder writes them);
// shm.ErrTruncated if the segment file shrank under the mapping (the read is guarded, never
// SIGBUS). It allocates; it is meant for readers, not for a record path.
func (s *Set) Snapshot() (snap Snapshot, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Snapshot{}, ErrClosed
	}
	mem := s.seg.Data() // an inspected set's mapping; the segment is open while mu is held
	if s.region != nil {
		mem = s.region.data
	}
	snap = Snapshot{Name: s.Name(), Taken: time.Now(), Series: make([]Series, len(s.schema))}
	if err := s.read(mem, snap.Series); err != nil {
		return Snapshot{}, err
	}
	for i := range snap.Series {
		if h := snap.Series[i].Histogram; h != nil {
			if err := h.summarize(); err != nil {
				return Snapshot{}, fmt.Errorf("%w: %s: histogram %s: %w", ErrCorrupt, s.Name(), snap.Series[i].ID(), err)
			}
		}
	}
	return snap, nil
}

// read copies every value out of mem, each word loaded once, under the fault guard.
func (s *Set) read(mem []byte, out []Series) (err error) {
	defer guardFaults(s.Name(), &err)()
	for i, d := range s.schema {
		l := &s.series[i]
		out[i].Desc = d
		out[i].Labels = append([]Label(nil), d.Labels...)
		switch d.Type {
		case TypeCounter:
			out[i].Counter = atomic.LoadUint64(layout.Uint64(mem, l.off+offValue))
		case TypeGauge:
			out[i].Gauge = atomic.LoadInt64(layout.Int64(mem, l.off+offValue))
		case TypeHistogram:
			src := int64s(mem, l.countsOff, l.geom.countsLen)
			h := &HistogramSnapshot{Counts: make([]int64, len(src)),
				OutOfRange: atomic.LoadUint64(layout.Uint64(mem, l.off+offOutOfRange)),
				geom:       &l.geom}
			for j := range src {
				h.Counts[j] = atomic.LoadInt64(&src[j])
			}
			out[i].Histogram = h
		}
	}
	return nil
}

// summarize checks the copied counts (hdrhistogram's Validate: none negative, the sum
// representable) and fills in what the library computes from them.
func (h *HistogramSnapshot) summarize() error {
	exp := h.export()
	if err := exp.Validate(); err != nil {
		return err
	}
	hist := hdrhistogram.Import(exp)
	h.Count = hist.TotalCount()
	h.Buckets = []Bucket{}
	if h.Count == 0 {
		return nil
	}
	h.Min, h.Max, h.Mean, h.StdDev = hist.Min(), hist.Max(), hist.Mean(), hist.StdDev()
	q := hist.ValueAtPercentilesSlice([]float64{50, 90, 95, 99, 99.9})
	h.P50, h.P90, h.P95, h.P99, h.P999 = q[0], q[1], q[2], q[3], q[4]
	for i, n := range h.Counts {
		if n != 0 {
			from, to := h.geom.bucketRange(i)
			h.Buckets = append(h.Buckets, Bucket{From: from, To: to, Count: n})
		}
	}
	return nil
}

// Find returns the series of the snapshot with that name and labels (in any order).
func (s *Snapshot) Find(name string, labels ...Label) (*Series, bool) {
	id := seriesID(name, labels)
	for i := range s.Series {
		if s.Series[i].ID() == id {
			return &s.Series[i], true
		}
	}
	return nil, false
}
