package promshmq_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/promshmq"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// createSet creates a metrics set in dir, closed after the test.
func createSet(t *testing.T, dir, name string, schema []metrics.Desc) *metrics.Set {
	t.Helper()
	s, err := metrics.Create(name, schema, shm.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// summaryCount returns the sample count of the summary metric with labels.
func summaryCount(t *testing.T, reg *prometheus.Registry, metric string, labels map[string]string) (uint64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return m.GetSummary().GetSampleCount(), true
		}
	}
	return 0, false
}

// TestReviewSeriesOfSeveralSetsShareAName: two metrics sets (two programs, or two versions of
// one) that each have a series of the same name, with different help texts or types, are
// valid sets. A Prometheus registry refuses a family whose metrics disagree on help or type,
// which failed the whole scrape (every segment's metrics lost). Now every segment is
// exported: a series agreeing in type is exported under the family's first help, one that
// cannot join the family is left out.
func TestReviewSeriesOfSeveralSetsShareAName(t *testing.T) {
	dir := testDir(t)
	create(t, dir, "q", ring.Spec{Kind: ring.SPSC, Size: 4096})
	a := createSet(t, dir, "a.metrics", []metrics.Desc{{Name: "requests_total", Type: metrics.TypeCounter, Help: "requests served"}})
	b := createSet(t, dir, "b.metrics", []metrics.Desc{{Name: "requests_total", Type: metrics.TypeCounter, Help: "requests handled"}})
	createSet(t, dir, "c.metrics", []metrics.Desc{
		{Name: "requests_total", Type: metrics.TypeGauge, Help: "requests served"},
		{Name: "other", Type: metrics.TypeGauge, Help: "other"},
	})
	ca, err := a.Counter("requests_total")
	require.NoError(t, err)
	ca.Add(3)
	cb, err := b.Counter("requests_total")
	require.NoError(t, err)
	cb.Add(5)

	s := gather(t, promshmq.NewCollector(promshmq.Options{Segments: shm.Options{Dir: dir}}))
	assert.Equal(t, 3.0, s.get(t, "requests_total", "name=a.metrics", "kind=metrics"))
	assert.Equal(t, 5.0, s.get(t, "requests_total", "name=b.metrics", "kind=metrics"))
	assert.NotContains(t, s["requests_total"], "kind=metrics,name=c.metrics", "a gauge cannot join a counter family")
	assert.Equal(t, 0.0, s.get(t, "other", "name=c.metrics", "kind=metrics"))
	assert.Equal(t, 1.0, s.get(t, "shmq_segment_up", "name=q", "kind=spsc"))
}

// TestReviewSeriesLabelsClash: a series with labels "name" and "exported_name" (both valid
// keys) was exported with two labels named exported_name, which failed the whole scrape. The
// renaming now prefixes "exported_" until the key is free, as Prometheus does for target
// labels.
func TestReviewSeriesLabelsClash(t *testing.T) {
	dir := testDir(t)
	create(t, dir, "q", ring.Spec{Kind: ring.SPSC, Size: 4096})
	createSet(t, dir, "m", []metrics.Desc{{Name: "depth", Type: metrics.TypeGauge,
		Labels: metrics.Labels("name", "x", "exported_name", "y", "kind", "k")}})

	s := gather(t, promshmq.NewCollector(promshmq.Options{Segments: shm.Options{Dir: dir}}))
	assert.Equal(t, 0.0, s.get(t, "depth", "name=m", "kind=metrics", "exported_exported_name=x", "exported_name=y", "exported_kind=k"))
	assert.Equal(t, 1.0, s.get(t, "shmq_segment_up", "name=q", "kind=spsc"))
}

// TestReviewSeriesNamesClashAfterConversion: series that are distinct in a set can have the
// same Prometheus name once their unit is converted (lat and lat_nanoseconds both become
// lat_seconds), or one's name can be a summary's _count, or a name of the collector's own:
// each made the registry fail the whole scrape. The first series keeps the name; the others
// are left out, and everything else is exported.
func TestReviewSeriesNamesClashAfterConversion(t *testing.T) {
	dir := testDir(t)
	create(t, dir, "q", ring.Spec{Kind: ring.SPSC, Size: 4096})
	hist := func(name string) metrics.Desc {
		return metrics.Desc{Name: name, Type: metrics.TypeHistogram, Unit: "nanoseconds", Lowest: 1, Highest: 1e9, Digits: 2}
	}
	set := createSet(t, dir, "m", []metrics.Desc{
		hist("lat"),
		hist("lat_nanoseconds"), // lat_seconds again
		{Name: "lat_seconds", Type: metrics.TypeGauge, Unit: "seconds"}, // lat_seconds again, another type
		{Name: "lat_seconds_count", Type: metrics.TypeCounter},          // the summary's count
		{Name: "lat_out_of_range_total", Type: metrics.TypeCounter},     // the histogram's own counter
		{Name: "shmq_segment_up", Type: metrics.TypeGauge},              // the collector's
		{Name: "fine", Type: metrics.TypeGauge},
	})
	lat, err := set.Histogram("lat")
	require.NoError(t, err)
	require.NoError(t, lat.Record(5))
	other, err := set.Histogram("lat_nanoseconds")
	require.NoError(t, err)
	require.NoError(t, other.Record(5))
	require.NoError(t, other.Record(6))

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(promshmq.NewCollector(promshmq.Options{Segments: shm.Options{Dir: dir}})))
	n, ok := summaryCount(t, reg, "lat_seconds", map[string]string{"name": "m", "kind": "metrics"})
	require.True(t, ok)
	assert.EqualValues(t, 1, n, "the first series of the name")

	s := gather(t, promshmq.NewCollector(promshmq.Options{Segments: shm.Options{Dir: dir}}))
	assert.Equal(t, 0.0, s.get(t, "fine", "name=m", "kind=metrics"))
	assert.Equal(t, 1.0, s.get(t, "shmq_segment_up", "name=m", "kind=metrics"))
	assert.Equal(t, 1.0, s.get(t, "shmq_segment_up", "name=q", "kind=spsc"))
	assert.NotContains(t, s, "lat_seconds_count")
}

// TestReviewNamesGivenTwice: a segment named twice in Options.Names was collected twice, the
// same series twice, which failed the whole scrape.
func TestReviewNamesGivenTwice(t *testing.T) {
	dir := testDir(t)
	create(t, dir, "q", ring.Spec{Kind: ring.SPSC, Size: 4096})
	s := gather(t, promshmq.NewCollector(promshmq.Options{Segments: shm.Options{Dir: dir}, Names: []string{"q", "q"}}))
	assert.Equal(t, 1.0, s.get(t, "shmq_segment_up", "name=q", "kind=spsc"))
}
