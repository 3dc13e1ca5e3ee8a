package promshmq_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/promshmq"
	"github.com/shmq/shmq/shm"
)

// TestCollectMetricsSet: a metrics set's series are exported under their own names with the
// set's labels, histograms as summaries in seconds.
func TestCollectMetricsSet(t *testing.T) {
	dir := testDir(t)
	opts := shm.Options{Dir: dir}
	set, err := metrics.Create("bus.metrics", []metrics.Desc{
		{Name: "bus_published_total", Type: metrics.TypeCounter, Help: "events published"},
		{Name: "bus_queue_depth", Type: metrics.TypeGauge, Help: "events queued", Labels: metrics.Labels("name", "orders", "lane", "low")},
		{Name: "bus_delivery_latency", Type: metrics.TypeHistogram, Help: "publish to handler", Unit: "nanoseconds",
			Lowest: 1, Highest: 60e9, Digits: 3},
		{Name: "bus_payload", Type: metrics.TypeHistogram, Help: "payload sizes", Unit: "bytes", Lowest: 1, Highest: 1 << 20, Digits: 2},
	}, opts)
	require.NoError(t, err)
	defer set.Close()
	published, err := set.Counter("bus_published_total")
	require.NoError(t, err)
	depth, err := set.Gauge("bus_queue_depth", metrics.Labels("name", "orders", "lane", "low")...)
	require.NoError(t, err)
	latency, err := set.Histogram("bus_delivery_latency")
	require.NoError(t, err)
	for i := range int64(1000) {
		published.Inc()
		require.NoError(t, latency.Record(1000+i)) // 1 to 2 µs
	}
	depth.Add(42)
	assert.ErrorIs(t, latency.Record(-1), metrics.ErrOutOfRange)

	c := promshmq.NewCollector(promshmq.Options{Segments: opts})
	defer c.Close()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	byName := map[string]int{}
	for i, mf := range mfs {
		byName[mf.GetName()] = i
	}
	get := func(name string) []string {
		i, ok := byName[name]
		require.True(t, ok, "no %s", name)
		var out []string
		for _, l := range mfs[i].GetMetric()[0].GetLabel() {
			out = append(out, l.GetName()+"="+l.GetValue())
		}
		return out
	}

	assert.Equal(t, []string{"kind=metrics", "name=bus.metrics"}, get("bus_published_total"))
	assert.Equal(t, 1000.0, mfs[byName["bus_published_total"]].GetMetric()[0].GetCounter().GetValue())
	assert.Equal(t, "events published", mfs[byName["bus_published_total"]].GetHelp())

	assert.Equal(t, []string{"exported_name=orders", "kind=metrics", "lane=low", "name=bus.metrics"}, get("bus_queue_depth"),
		"a series label named like a segment label is renamed")
	assert.Equal(t, 42.0, mfs[byName["bus_queue_depth"]].GetMetric()[0].GetGauge().GetValue())

	get("bus_delivery_latency_seconds")
	sum := mfs[byName["bus_delivery_latency_seconds"]].GetMetric()[0].GetSummary()
	assert.EqualValues(t, 1000, sum.GetSampleCount())
	assert.InDelta(t, 1.5e-6, sum.GetSampleSum()/1000, 0.01e-6, "mean about 1.5 µs")
	quantiles := map[float64]float64{}
	for _, q := range sum.GetQuantile() {
		quantiles[q.GetQuantile()] = q.GetValue()
	}
	assert.InDelta(t, 1499e-9, quantiles[0.5], 1e-12)
	assert.InDelta(t, 1989e-9, quantiles[0.99], 1e-12)
	assert.Len(t, quantiles, 5)
	assert.Equal(t, 1.0, mfs[byName["bus_delivery_latency_out_of_range_total"]].GetMetric()[0].GetCounter().GetValue())
	get("bus_payload_bytes")
	assert.Equal(t, 1.0, mfs[byName["shmq_segment_up"]].GetMetric()[0].GetGauge().GetValue())
}

func TestPromName(t *testing.T) {
	for _, c := range []struct {
		name, unit string
		typ        metrics.Type
		want       string
		scale      float64
	}{
		{"bus_latency", "nanoseconds", metrics.TypeHistogram, "bus_latency_seconds", 1e-9},
		{"bus_latency_nanoseconds", "nanoseconds", metrics.TypeHistogram, "bus_latency_seconds", 1e-9},
		{"bus_wait_total", "microseconds", metrics.TypeCounter, "bus_wait_seconds_total", 1e-6},
		{"bus_wait_seconds_total", "seconds", metrics.TypeCounter, "bus_wait_seconds_total", 1},
		{"bus_sent_total", "bytes", metrics.TypeCounter, "bus_sent_bytes_total", 1},
		{"bus_ttl", "milliseconds", metrics.TypeGauge, "bus_ttl_seconds", 1e-3},
		{"bus_published_total", "events", metrics.TypeCounter, "bus_published_total", 1},
		{"bus_depth", "", metrics.TypeGauge, "bus_depth", 1},
	} {
		got, scale := promshmq.PromName(c.name, c.unit, c.typ)
		assert.Equal(t, c.want, got, c.name)
		assert.Equal(t, c.scale, scale, c.name)
	}
}
