package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// serveMetrics starts serve-metrics on a free loopback port and returns its metrics URL.
func serveMetrics(t testing.TB, dir string) (*background, string) {
	t.Helper()
	srv := startShmctl(t, dir, "serve-metrics", "--listen", "127.0.0.1:0")
	line := srv.waitOutput(t, 1)[0]
	m := regexp.MustCompile(`^serving metrics of .* on (http://127\.0\.0\.1:\d+/metrics)$`).FindStringSubmatch(line)
	require.NotNil(t, m, "first line: %q", line)
	return srv, m[1]
}

// scrape gets url and parses the text exposition format.
func scrape(t testing.TB, url string) map[string]*dto.MetricFamily {
	t.Helper()
	client := &http.Client{Timeout: 20 * time.Second}
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return mfs
}

// sample returns the value of metric whose labels include all of want ("k=v").
func sample(t *testing.T, mfs map[string]*dto.MetricFamily, metric string, want ...string) float64 {
	t.Helper()
	mf, ok := mfs[metric]
	require.True(t, ok, "no %s", metric)
	var found []string
	for _, m := range mf.GetMetric() {
		var have []string
		for _, l := range m.GetLabel() {
			have = append(have, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(have)
		found = append(found, strings.Join(have, ","))
		match := true
		for _, w := range want {
			match = match && slices.Contains(have, w)
		}
		if !match {
			continue
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		default:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s{%s} not found in %v", metric, strings.Join(want, ","), found)
	return 0
}

// TestServeMetrics scrapes serve-metrics over HTTP on loopback: the messages and bytes a
// writer process wrote, the lag of a subscriber process, the processes attached, a damaged
// segment down, a foreign file absent; and later scrapes see what changed.
func TestServeMetrics(t *testing.T) {
	dir := testDir(t)
	const n, size = 25, 10
	_, stderr, status := shmctl(t, dir, "create", "orders", "--kind", "spsc", "--size", "64KiB")
	require.Equal(t, 0, status, stderr)
	writer := proctest.Start(t, "writer", proctest.Options{Args: []string{dir, "orders", fmt.Sprint(n), fmt.Sprint(size)}})
	writer.WaitPoint("written", 20*time.Second)

	_, stderr, status = shmctl(t, dir, "create", "ticks", "--kind", "topic", "--size", "64KiB", "--policy", "overwrite")
	require.Equal(t, 0, status, stderr)
	startSubscriber(t, dir, "ticks", "audit")
	seg, err := shm.Open("ticks", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	pub, err := ring.NewPublisher(seg, ring.Options{})
	require.NoError(t, err)
	defer pub.Close()
	for range 7 {
		require.NoError(t, pub.TryWrite(1, []byte("tick")))
	}
	_, _, status = shmctl(t, dir, "create", "bad", "--kind", "mpmc", "--size", "64KiB")
	require.Equal(t, 0, status)
	corruptChecksum(t, dir+"/bad")
	require.NoError(t, os.WriteFile(dir+"/notes.txt", []byte("not a segment, long enough to have a magic"), 0o600))

	srv, url := serveMetrics(t, dir)
	mfs := scrape(t, url)
	orders := []string{"name=orders", "kind=spsc"}
	assert.Equal(t, float64(n), sample(t, mfs, "shmq_write_messages_total", orders...))
	assert.Equal(t, float64(n*size), sample(t, mfs, "shmq_write_bytes_total", orders...))
	assert.Equal(t, 0.0, sample(t, mfs, "shmq_read_messages_total", orders...))
	assert.Equal(t, 1.0, sample(t, mfs, "shmq_segment_processes", append(orders, "state=alive")...))
	assert.Equal(t, 1.0, sample(t, mfs, "shmq_ring_writer_state", append(orders, "state=attached")...))
	assert.Equal(t, 1.0, sample(t, mfs, "shmq_segment_up", orders...))
	ticks := []string{"name=ticks", "kind=topic"}
	assert.Equal(t, 7.0, sample(t, mfs, "shmq_write_messages_total", ticks...))
	assert.Equal(t, 7.0, sample(t, mfs, "shmq_topic_subscriber_lag_messages", append(ticks, "subscriber=audit")...))
	assert.Equal(t, 1.0, sample(t, mfs, "shmq_topic_subscriber_alive", append(ticks, "subscriber=audit")...))
	assert.Equal(t, 2.0, sample(t, mfs, "shmq_segment_processes", append(ticks, "state=alive")...))
	assert.Equal(t, 0.0, sample(t, mfs, "shmq_segment_up", "name=bad"))
	assert.Equal(t, dto.MetricType_COUNTER, mfs["shmq_write_messages_total"].GetType())
	assert.Contains(t, mfs, "process_cpu_seconds_total", "the exporter's own metrics")
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				assert.NotEqual(t, "notes.txt", l.GetValue(), "a foreign file is no segment")
			}
		}
	}

	// The writer dies: the next scrape says so, and keeps its counts.
	writer.Kill()
	_ = writer.Wait(20 * time.Second)
	mfs = scrape(t, url)
	assert.Equal(t, float64(n), sample(t, mfs, "shmq_write_messages_total", orders...))
	assert.Equal(t, 1.0, sample(t, mfs, "shmq_segment_processes", append(orders, "state=dead")...))
	assert.Equal(t, 1.0, sample(t, mfs, "shmq_ring_writer_state", append(orders, "state=dead")...))

	resp, err := http.Get(strings.TrimSuffix(url, "metrics"))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), `href="/metrics"`)

	srv.cancel()
	require.Equal(t, 0, srv.wait(t), srv.stderr.String())
	_, err = (&http.Client{Timeout: 5 * time.Second}).Get(url)
	assert.Error(t, err, "the server stopped listening")
}

func TestServeMetricsUsage(t *testing.T) {
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "serve-metrics")
	assert.Equal(t, 2, status, stderr)
	_, stderr, status = shmctl(t, dir, "serve-metrics", "--listen", "127.0.0.1:0", "--path", "metrics")
	assert.Equal(t, 2, status, stderr)
	_, stderr, status = shmctl(t, dir+"/missing", "serve-metrics", "--listen", "127.0.0.1:0")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
	_, stderr, status = shmctl(t, dir, "serve-metrics", "--listen", "256.0.0.1:99999")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
}

// BenchmarkServeMetrics100: one scrape of serve-metrics over HTTP on loopback, with 100
// segments in the directory (40 SPSC, 40 MPMC, 20 topics with two subscriptions each, all
// with a writer attached and messages written), parsed as Prometheus would. The goal is
// 50 ms a scrape. cpu-ms/op is the CPU time of the whole process (server and client) per
// scrape: on a shared machine wall time also counts the time others ran.
func BenchmarkServeMetrics100(b *testing.B) {
	dir := testDir(b)
	for i := range 100 {
		name := fmt.Sprintf("seg%03d", i)
		var spec ring.Spec
		switch {
		case i < 40:
			spec = ring.Spec{Kind: ring.SPSC, Size: 64 << 10}
		case i < 80:
			spec = ring.Spec{Kind: ring.MPMC, Size: 64 << 10, SlotSize: 128}
		default:
			spec = ring.Spec{Kind: ring.Topic, Size: 64 << 10, SlotSize: 128, Policy: ring.Overwrite}
		}
		seg, err := ring.Create(name, spec, shm.Options{Dir: dir})
		require.NoError(b, err)
		b.Cleanup(func() { seg.Close() })
		if spec.Kind == ring.Topic {
			for _, n := range []string{"", "durable"} {
				s, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{Name: n})
				require.NoError(b, err)
				b.Cleanup(func() { s.Close() })
			}
		}
		w, err := ring.NewWriter(seg, ring.Options{})
		require.NoError(b, err)
		b.Cleanup(func() { w.Close() })
		for range 10 {
			require.NoError(b, w.TryWrite(1, make([]byte, 64)))
		}
	}
	_, url := serveMetrics(b, dir)
	mfs := scrape(b, url)
	require.Len(b, mfs["shmq_segment_up"].GetMetric(), 100)
	client := &http.Client{}
	cpu0 := cpuTime(b)
	for b.Loop() {
		resp, err := client.Get(url)
		require.NoError(b, err)
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(b, err)
		resp.Body.Close()
		require.Equal(b, http.StatusOK, resp.StatusCode)
	}
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
