package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

// TestStatCompanions: stat of a topic shows the metrics sets named after it (a NATS bridge's
// counters, TOPIC.bridge.NAME), and only those.
func TestStatCompanions(t *testing.T) {
	dir := testDir(t)
	opts := shm.Options{Dir: dir}
	tp, err := topic.Open("orders", topic.Config{Policy: ring.Block}, opts)
	require.NoError(t, err)
	defer tp.Close()
	lbl := []metrics.Label{{Key: "direction", Value: "out"}, {Key: "subject", Value: "shmq.orders"}}
	set, err := metrics.Create("orders.bridge.a", []metrics.Desc{{Name: "shmq_bridge_forwarded_total", Type: metrics.TypeCounter, Labels: lbl}}, opts)
	require.NoError(t, err)
	defer set.Close()
	c, err := set.Counter("shmq_bridge_forwarded_total", lbl...)
	require.NoError(t, err)
	c.Add(17)
	other, err := metrics.Create("ordersx.bridge.a", []metrics.Desc{{Name: "x_total", Type: metrics.TypeCounter}}, opts)
	require.NoError(t, err)
	defer other.Close()

	stdout, stderr, status := shmctl(t, dir, "stat", "orders")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stdout, "metrics orders.bridge.a")
	assert.Regexp(t, `shmq_bridge_forwarded_total\{direction="out",subject="shmq.orders"\}\s+17\n`, stdout)
	assert.NotContains(t, stdout, "ordersx")

	stdout, stderr, status = shmctl(t, dir, "stat", "orders", "--json")
	require.Equal(t, 0, status, stderr)
	var r struct {
		Companions []struct {
			Name    string `json:"name"`
			Metrics struct {
				Series []map[string]any `json:"series"`
			} `json:"metrics"`
		} `json:"companion_metrics"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &r))
	require.Len(t, r.Companions, 1)
	assert.Equal(t, "orders.bridge.a", r.Companions[0].Name)
	assert.Equal(t, 17.0, r.Companions[0].Metrics.Series[0]["value"])
}
