package metrics

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/stretchr/testify/require"
)

// geometries covers the precisions, unit magnitudes from 0 up, ranges of one bucket to
// many, and highest values on and next to bucket boundaries.
func geometries() [][3]int64 {
	out := [][3]int64{
		{1, 2, 1}, {1, 3600e9, 3}, {1, 60e9, 3}, {1, 1e6, 5}, {1, 1 << 20, 2},
		{1000, 60e9, 3}, {3, 1000, 4}, {7, 1 << 40, 1}, {1 << 20, 1 << 50, 2},
		{1, 2048, 3}, {1, 2047, 3}, {1, 2049, 3}, {5, math.MaxInt64, 1}, {1 << 30, math.MaxInt64, 3}, {1 << 40, math.MaxInt64, 5},
	}
	r := rand.New(rand.NewPCG(1, 2))
	n := 100
	if testing.Short() {
		n = 30
	}
	for len(out) < n {
		lo := r.Int64N(1<<uint(r.IntN(40))) + 1
		hi := lo*2 + r.Int64N(1<<uint(r.IntN(62-bitsLen(lo))+1))
		d := int64(r.IntN(5) + 1)
		if g, err := newGeometry(lo, hi, int(d)); err == nil && g.countsLen <= 1<<16 {
			out = append(out, [3]int64{lo, hi, d})
		}
	}
	return out
}

func bitsLen(x int64) int {
	n := 0
	for ; x > 0; x >>= 1 {
		n++
	}
	return n
}

// probeValues are values around every power of two, random ones up to past highest, and
// the extremes.
func probeValues(r *rand.Rand, highest int64) []int64 {
	vs := []int64{0, 1, 2, 3, highest - 1, highest, highest + 1, math.MaxInt64, -1, math.MinInt64}
	for s := range 63 {
		p := int64(1) << s
		vs = append(vs, p-1, p, p+1)
	}
	for range 2000 {
		vs = append(vs, r.Int64N(max(highest/1<<uint(r.IntN(30)), 1))+r.Int64N(3))
	}
	return vs
}

// TestGeometryMatchesLibrary holds geometry to hdrhistogram-go: for each geometry the same
// counts length, and for each value the same decision (recordable or not) and the same
// bucket, shown by the counts arrays being equal after recording the same values.
func TestGeometryMatchesLibrary(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, gg := range geometries() {
		g, err := newGeometry(gg[0], gg[1], int(gg[2]))
		require.NoError(t, err, "%v", gg)
		lib := hdrhistogram.New(gg[0], gg[1], int(gg[2]))
		ours := make([]int64, g.countsLen)
		require.Len(t, lib.Export().Counts, g.countsLen, "counts length of %v", gg)
		for _, v := range probeValues(r, gg[1]) {
			libErr := lib.RecordValue(v)
			i := g.index(v)
			ok := v >= 0 && uint(i) < uint(len(ours))
			if (libErr == nil) != ok {
				t.Fatalf("value %d in %v: library says %v, index %d of %d", v, gg, libErr, i, len(ours))
			}
			if ok {
				ours[i]++
			}
		}
		if i := firstDiff(lib.Export().Counts, ours); i >= 0 {
			t.Fatalf("counts of %v differ first at %d", gg, i)
		}
		// Every value up to highest is recordable, as the library promises.
		require.Less(t, g.index(gg[1]), g.countsLen, "%v", gg)
		// The library's non-empty bars are the ranges bucketRange gives, in order (for the
		// geometries whose Distribution, a bar per bucket, is quick to build).
		if g.countsLen > 1<<16 {
			continue
		}
		k := 0
		for _, b := range lib.Distribution() {
			if b.Count == 0 {
				continue
			}
			for ours[k] == 0 {
				k++
			}
			if from, to := g.bucketRange(k); b != (hdrhistogram.Bar{From: from, To: to, Count: ours[k]}) {
				t.Fatalf("bucket %d of %v: library %v, ours [%d, %d]", k, gg, b, from, to)
			}
			k++
		}
	}
}

func firstDiff(a, b []int64) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestGeometryRefuses: the ranges hdrhistogram.New would clamp, panic on, or that would
// take too much memory are errors.
func TestGeometryRefuses(t *testing.T) {
	for _, gg := range [][3]int64{
		{0, 100, 3}, {-1, 100, 3}, {1, 100, 0}, {1, 100, 6}, {10, 19, 3}, {1, 1, 1},
		{1 << 60, math.MaxInt64, 3}, // unit magnitude + sub-bucket magnitude > 61
		{1, math.MaxInt64, 5},       // too many buckets
		{math.MaxInt64/2 + 1, math.MaxInt64, 1},
	} {
		_, err := newGeometry(gg[0], gg[1], int(gg[2]))
		require.Error(t, err, "%v", gg)
	}
}
