package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/shm"
)

// TestStatMetrics: stat on a metrics set prints its series with their values, in text and
// JSON, changes nothing, and reports a corrupt schema instead of failing.
func TestStatMetrics(t *testing.T) {
	dir := testDir(t)
	set, err := metrics.Create("bus.metrics", []metrics.Desc{
		{Name: "bus_published_total", Type: metrics.TypeCounter, Help: "events published"},
		{Name: "bus_delivered_total", Type: metrics.TypeCounter, Labels: []metrics.Label{{Key: "sub", Value: "audit"}}},
		{Name: "bus_queue_depth", Type: metrics.TypeGauge},
		{Name: "bus_latency", Type: metrics.TypeHistogram, Unit: "nanoseconds", Lowest: 1, Highest: 1e9, Digits: 3},
	}, shm.Options{Dir: dir})
	require.NoError(t, err)
	defer set.Close()
	c, _ := set.Counter("bus_published_total")
	c.Add(42)
	g, _ := set.Gauge("bus_queue_depth")
	g.Set(-3)
	h, _ := set.Histogram("bus_latency")
	want := hdrhistogram.New(1, 1e9, 3) // the library's figures for the same values
	for v := range int64(100) {
		require.NoError(t, h.Record(1000*(v+1)))
		require.NoError(t, want.RecordValue(1000*(v+1)))
	}
	path := filepath.Join(dir, "bus.metrics")
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	stdout, stderr, status := shmctl(t, dir, "stat", "bus.metrics")
	require.Equal(t, 0, status, stderr)
	assert.Regexp(t, `kind +metrics, layout 2.0`, stdout)
	assert.Regexp(t, `processes +1 alive, 0 dead \(1 peer entry\)`, stdout)
	assert.Regexp(t, `bus_published_total\s+counter\s+-\s+42\n`, stdout)
	assert.Regexp(t, `bus_delivered_total\{sub="audit"\}\s+counter\s+-\s+0\n`, stdout)
	assert.Regexp(t, `bus_queue_depth\s+gauge\s+-\s+-3\n`, stdout)
	assert.Regexp(t, fmt.Sprintf(`bus_latency\s+histogram\s+nanoseconds\s+count 100 p50 %d p95 %d p99 %d max %d mean %.1f\n`,
		want.ValueAtQuantile(50), want.ValueAtQuantile(95), want.ValueAtQuantile(99), want.Max(), want.Mean()), stdout)

	stdout, stderr, status = shmctl(t, dir, "stat", "bus.metrics", "--json")
	require.Equal(t, 0, status, stderr)
	var r struct {
		Kind    string `json:"kind"`
		Peers   []peerJSON
		Metrics struct {
			Series []map[string]any `json:"series"`
		} `json:"metrics"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &r))
	assert.Equal(t, "metrics", r.Kind)
	require.Len(t, r.Peers, 1)
	require.Len(t, r.Metrics.Series, 4)
	assert.Equal(t, 42.0, r.Metrics.Series[0]["value"])
	assert.Equal(t, "events published", r.Metrics.Series[0]["help"])
	hist := r.Metrics.Series[3]["histogram"].(map[string]any)
	assert.Equal(t, 100.0, hist["count"])
	assert.Equal(t, float64(want.ValueAtQuantile(99)), hist["p99"])

	stdout, _, status = shmctl(t, dir, "ls")
	require.Equal(t, 0, status)
	assert.Regexp(t, `bus.metrics\s+metrics\s+256KiB\s+1 alive\s+ok`, stdout)

	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after, "stat changed nothing")

	// A scribbled schema: the segment is still shown, with the error.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xff}, 65536+6)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	stdout, stderr, status = shmctl(t, dir, "stat", "bus.metrics")
	require.Equal(t, 0, status, stderr)
	assert.Regexp(t, `kind\s+metrics`, stdout)
	assert.Contains(t, stdout, "metrics error")
	assert.Contains(t, stdout, "corrupt")
}
