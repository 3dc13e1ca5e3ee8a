package metrics

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// geometry is the bucket layout of an HdrHistogram, computed exactly as
// hdrhistogram-go v1.4.0 computes it (hdr.go: geometryMagnitudes, newExactGeometry,
// getBucketIndex, getSubBucketIdx, countsIndex): the library does not export the index of
// a value, and recording into shared memory needs it. Its counts are the library's counts
// array, so hdrhistogram.Import of a snapshot of them is the histogram the library would
// have built from the same values. TestGeometryMatchesLibrary holds the two together.
type geometry struct {
	lowest, highest int64
	digits          int
	// unitMagnitude is floor(log2(lowest)); subHalfMagnitude is log2 of half the
	// sub-buckets per bucket.
	unitMagnitude    uint8
	subHalfMagnitude uint8
	subHalfCount     int32
	subBucketMask    int64
	countsLen        int
}

// newGeometry checks a histogram's range and precision and lays it out. The rules are
// hdrhistogram.New's, made errors instead of clamping or panicking: lowest >= 1, digits
// 1 to 5, highest >= 2*lowest, a geometry that fits 64 bits, and at most MaxBuckets counts.
func newGeometry(lowest, highest int64, digits int) (geometry, error) {
	switch {
	case lowest < 1:
		return geometry{}, fmt.Errorf("histogram lowest value %d: want at least 1", lowest)
	case digits < 1 || digits > 5:
		return geometry{}, fmt.Errorf("histogram precision of %d digits: want 1 to 5", digits)
	case highest/2 < lowest: // highest >= 2*lowest, without overflow
		return geometry{}, fmt.Errorf("histogram highest value %d: want at least twice the lowest (%d)", highest, lowest)
	}
	// geometryMagnitudes: the sub-bucket count is the power of two that gives single-unit
	// resolution up to 2*10^digits. The same float expressions as the library's, so that
	// rounding agrees.
	subCountMagnitude := int32(math.Ceil(math.Log2(2 * math.Pow10(digits))))
	subHalfMagnitude := max(subCountMagnitude, 1) - 1
	unitMagnitude := max(int32(math.Floor(math.Log2(float64(lowest)))), 0)
	if unitMagnitude+subHalfMagnitude > 61 {
		return geometry{}, fmt.Errorf("histogram lowest value %d is too large for %d digits", lowest, digits)
	}
	subBucketCount := int64(1) << (subHalfMagnitude + 1)
	// getBucketsNeededToCoverValue.
	smallestUntrackable := subBucketCount << unitMagnitude
	buckets := int64(1)
	for smallestUntrackable <= highest {
		if smallestUntrackable > math.MaxInt64/2 {
			buckets++
			break
		}
		smallestUntrackable <<= 1
		buckets++
	}
	countsLen := (buckets + 1) * (subBucketCount / 2)
	if countsLen > MaxBuckets {
		return geometry{}, fmt.Errorf("histogram of %d to %d at %d digits needs %d buckets, at most %d", lowest, highest, digits, countsLen, MaxBuckets)
	}
	return geometry{
		lowest: lowest, highest: highest, digits: digits,
		unitMagnitude:    uint8(unitMagnitude),
		subHalfMagnitude: uint8(subHalfMagnitude),
		subHalfCount:     int32(subBucketCount / 2),
		subBucketMask:    (subBucketCount - 1) << unitMagnitude,
		countsLen:        int(countsLen),
	}, nil
}

// index returns the counts index of v, as the library's countsIndexFor; the caller checks
// v >= 0 and the result against countsLen (RecordValues does the same). It is the record
// path: no branches beyond the arithmetic, no allocation.
func (g *geometry) index(v int64) int {
	pow2Ceiling := int32(64 - bits.LeadingZeros64(uint64(v|g.subBucketMask)))
	bucket := pow2Ceiling - int32(g.unitMagnitude) - int32(g.subHalfMagnitude+1)
	sub := int32(v >> (uint(bucket) + uint(g.unitMagnitude)))
	return int((bucket+1)<<g.subHalfMagnitude + sub - g.subHalfCount)
}

// bucketRange returns the values counted at counts index i, from the lowest to the highest
// equivalent value, as the library's valueFromFlatIndex and highestEquivalentValue give
// them; i is a valid index.
func (g *geometry) bucketRange(i int) (from, to int64) {
	bucket := int32(i>>g.subHalfMagnitude) - 1
	sub := int32(i)&(g.subHalfCount-1) + g.subHalfCount
	if bucket < 0 {
		sub -= g.subHalfCount
		bucket = 0
	}
	shift := uint(bucket) + uint(g.unitMagnitude)
	from = int64(sub) << shift
	return from, from + (int64(1)<<shift - 1)
}

// library returns an empty hdrhistogram of the same geometry (for tests and Snapshot).
func (g *geometry) library() *hdrhistogram.Histogram {
	return hdrhistogram.New(g.lowest, g.highest, g.digits)
}
