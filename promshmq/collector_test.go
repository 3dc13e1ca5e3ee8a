package promshmq_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/promshmq"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// testDir returns a private segment directory under /dev/shm (else the system's temporary
// directory), removed after the test.
func testDir(t testing.TB) string {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	d, err := os.MkdirTemp(base, "promshmq-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func create(t testing.TB, dir, name string, spec ring.Spec) *shm.Segment {
	t.Helper()
	s, err := ring.Create(name, spec, shm.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// series is a scrape: metric name → labels as "k=v,k=v" (sorted) → value.
type series map[string]map[string]float64

func gather(t testing.TB, c prometheus.Collector) series {
	t.Helper()
	reg := prometheus.NewPedanticRegistry() // also checks Collect against Describe
	require.NoError(t, reg.Register(c))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := series{}
	for _, mf := range mfs {
		m := map[string]float64{}
		for _, metric := range mf.GetMetric() {
			var kv []string
			for _, l := range metric.GetLabel() {
				kv = append(kv, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(kv)
			m[strings.Join(kv, ",")] = value(mf.GetType(), metric)
		}
		out[mf.GetName()] = m
	}
	return out
}

func value(t dto.MetricType, m *dto.Metric) float64 {
	if t == dto.MetricType_COUNTER {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// get returns the value of metric with labels (name and kind first, "k=v" each after).
func (s series) get(t *testing.T, metric string, labels ...string) float64 {
	t.Helper()
	sort.Strings(labels)
	v, ok := s[metric][strings.Join(labels, ",")]
	require.True(t, ok, "%s{%s} missing; have %v", metric, strings.Join(labels, ","), s[metric])
	return v
}

func TestCollectRings(t *testing.T) {
	dir := testDir(t)
	ctx := context.Background()

	a := create(t, dir, "a", ring.Spec{Kind: ring.SPSC, Size: 4096})
	w, err := ring.NewWriter(a, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	r, err := ring.NewReader(a, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	for range 5 {
		require.NoError(t, w.TryWrite(1, make([]byte, 10)))
	}
	buf := make([]byte, 64)
	for range 5 {
		_, _, err := r.TryRead(buf)
		require.NoError(t, err)
	}
	_, _, err = r.TryRead(buf)
	require.ErrorIs(t, err, ring.ErrEmpty) // all 5 read, then empty once

	a2, err := shm.Open("a", shm.Options{Dir: dir}) // a second peer entry, same process
	require.NoError(t, err)
	defer a2.Close()

	b := create(t, dir, "b", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64})
	bw, err := ring.NewWriter(b, ring.Options{})
	require.NoError(t, err)
	defer bw.Close()
	for range 3 {
		require.NoError(t, bw.TryWrite(1, []byte("abcd")))
	}

	c := create(t, dir, "c", ring.Spec{Kind: ring.Topic, Size: 4096, SlotSize: 64, Policy: ring.Block})
	anon, err := ring.Subscribe(ctx, c, ring.SubscribeOptions{})
	require.NoError(t, err)
	defer anon.Close()
	audit, err := ring.Subscribe(ctx, c, ring.SubscribeOptions{Name: "audit"})
	require.NoError(t, err)
	defer audit.Close()
	pub, err := ring.NewPublisher(c, ring.Options{})
	require.NoError(t, err)
	defer pub.Close()
	for range 4 {
		require.NoError(t, pub.TryWrite(2, []byte("tick")))
	}
	_, _, err = audit.TryRead(buf)
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a segment, but long enough"), 0o600))
	bad := create(t, dir, "bad", ring.Spec{Kind: ring.SPSC, Size: 4096})
	require.NoError(t, bad.Close())
	f, err := os.OpenFile(filepath.Join(dir, "bad"), os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0x77}, 41) // inside the descriptor: checksum mismatch
	require.NoError(t, err)
	require.NoError(t, f.Close())

	s := gather(t, promshmq.NewCollector(promshmq.Options{Segments: shm.Options{Dir: dir}}))

	spsc := []string{"name=a", "kind=spsc"}
	assert.Equal(t, 5.0, s.get(t, "shmq_write_messages_total", spsc...))
	assert.Equal(t, 50.0, s.get(t, "shmq_write_bytes_total", spsc...))
	assert.Equal(t, 5.0, s.get(t, "shmq_read_messages_total", spsc...))
	assert.Equal(t, 50.0, s.get(t, "shmq_read_bytes_total", spsc...))
	assert.Equal(t, 1.0, s.get(t, "shmq_read_empty_total", spsc...))
	assert.Equal(t, 0.0, s.get(t, "shmq_ring_used_ratio", spsc...))
	assert.Equal(t, 1.0, s.get(t, "shmq_ring_endpoints", append(spsc, "side=write")...))
	assert.Equal(t, 1.0, s.get(t, "shmq_ring_writer_state", append(spsc, "state=attached")...))
	assert.Equal(t, 0.0, s.get(t, "shmq_ring_writer_state", append(spsc, "state=ended")...))
	assert.Equal(t, 4096.0, s.get(t, "shmq_segment_data_bytes", spsc...))
	assert.Equal(t, 1.0, s.get(t, "shmq_segment_up", spsc...))
	assert.Equal(t, 1.0, s.get(t, "shmq_segment_processes", append(spsc, "state=alive")...),
		"this process has the segment open twice (two peer entries): one process")
	assert.InDelta(t, float64(a.Descriptor().Created.UnixNano())/1e9, s.get(t, "shmq_segment_created_timestamp_seconds", spsc...), 1e-3)

	mpmc := []string{"name=b", "kind=mpmc"}
	assert.Equal(t, 3.0, s.get(t, "shmq_write_messages_total", mpmc...))
	assert.Equal(t, 12.0, s.get(t, "shmq_write_bytes_total", mpmc...))
	assert.Equal(t, 0.0, s.get(t, "shmq_read_messages_total", mpmc...))
	assert.InDelta(t, 3.0/64, s.get(t, "shmq_ring_used_ratio", mpmc...), 1e-9, "3 of 64 slots")

	topic := []string{"name=c", "kind=topic"}
	assert.Equal(t, 4.0, s.get(t, "shmq_write_messages_total", topic...))
	assert.Equal(t, 1.0, s.get(t, "shmq_read_messages_total", topic...))
	assert.Equal(t, 2.0, s.get(t, "shmq_ring_endpoints", append(topic, "side=read")...))
	assert.Equal(t, 4.0, s.get(t, "shmq_topic_subscriber_lag_messages", append(topic, "subscription=0", "subscriber=")...))
	assert.Equal(t, 3.0, s.get(t, "shmq_topic_subscriber_lag_messages", append(topic, "subscription=1", "subscriber=audit")...))
	assert.Equal(t, 1.0, s.get(t, "shmq_topic_subscriber_alive", append(topic, "subscription=1", "subscriber=audit")...))
	assert.Equal(t, 0.0, s.get(t, "shmq_topic_subscriber_missed_messages_total", append(topic, "subscription=1", "subscriber=audit")...))
	assert.InDelta(t, 4.0/64, s.get(t, "shmq_ring_used_ratio", topic...), 1e-9, "slowest live subscriber 4 behind, 64 slots")

	assert.Equal(t, 0.0, s.get(t, "shmq_segment_up", "name=bad", "kind="), "a damaged segment is down")
	for metric, m := range s {
		for labels := range m {
			assert.NotContains(t, labels, "notes.txt", "%s: a foreign file is not a segment", metric)
		}
	}

	// A durable subscription whose subscriber left stays, and is not alive.
	require.NoError(t, audit.Close())
	s = gather(t, promshmq.NewCollector(promshmq.Options{Segments: shm.Options{Dir: dir}, Names: []string{"c"}}))
	assert.Equal(t, 0.0, s.get(t, "shmq_topic_subscriber_alive", append(topic, "subscription=1", "subscriber=audit")...))
	assert.NotContains(t, s["shmq_segment_up"], "kind=spsc,name=a", "Names restricts the collector")
}

func TestCollectMissingDir(t *testing.T) {
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(promshmq.NewCollector(promshmq.Options{Segments: shm.Options{Dir: filepath.Join(t.TempDir(), "nope")}})))
	_, err := reg.Gather()
	assert.Error(t, err, "a directory that cannot be listed fails the scrape")
}

// TestCollectFollowsDirectory: the collector keeps segments mapped between scrapes, yet a
// segment removed and created again under the same name is read anew, a removed one
// disappears, and Close leaves later scrapes working.
func TestCollectFollowsDirectory(t *testing.T) {
	dir := testDir(t)
	opts := shm.Options{Dir: dir}
	write := func(n int) {
		seg, err := ring.Create("q", ring.Spec{Kind: ring.SPSC, Size: 4096}, opts)
		require.NoError(t, err)
		defer seg.Close()
		w, err := ring.NewWriter(seg, ring.Options{})
		require.NoError(t, err)
		defer w.Close()
		for range n {
			require.NoError(t, w.TryWrite(1, []byte("x")))
		}
	}
	c := promshmq.NewCollector(promshmq.Options{Segments: opts})
	defer c.Close()
	q := []string{"name=q", "kind=spsc"}

	write(3)
	assert.Equal(t, 3.0, gather(t, c).get(t, "shmq_write_messages_total", q...))
	require.NoError(t, shm.Remove("q", opts))
	write(7)
	assert.Equal(t, 7.0, gather(t, c).get(t, "shmq_write_messages_total", q...), "the new file, not the kept mapping")

	require.NoError(t, shm.Remove("q", opts))
	assert.Empty(t, gather(t, c)["shmq_segment_up"], "a removed segment is gone")

	write(2)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	assert.Equal(t, 2.0, gather(t, c).get(t, "shmq_write_messages_total", q...), "scrapes work after Close")
}
