package promshmq_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/promshmq"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// BenchmarkScrape100: one HTTP scrape of a directory of 100 segments (40 SPSC, 40 MPMC, 20
// topics with two subscriptions each, every one with traffic and attached endpoints), as
// Prometheus does it: request, collect, encode, read the body. The goal is 50 ms a scrape.
// cpu-ms/op is the CPU time of the process (server and client) per scrape: on a shared
// machine wall time also counts the time others ran.
func BenchmarkScrape100(b *testing.B) {
	dir := testDir(b)
	ctx := context.Background()
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
		seg := create(b, dir, name, spec)
		if spec.Kind == ring.Topic {
			for _, n := range []string{"", "durable"} {
				s, err := ring.Subscribe(ctx, seg, ring.SubscribeOptions{Name: n})
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
	// kept: the collector keeps its mappings between scrapes (what it does); remapped: after
	// Close it maps and unmaps every segment at every scrape, for comparison.
	for _, mode := range []string{"kept", "remapped"} {
		b.Run(mode, func(b *testing.B) {
			c := promshmq.NewCollector(promshmq.Options{Segments: shm.Options{Dir: dir}})
			if mode == "remapped" {
				require.NoError(b, c.Close())
			}
			defer c.Close()
			reg := prometheus.NewRegistry()
			reg.MustRegister(c)
			srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			defer srv.Close()
			scrape := func() int {
				resp, err := http.Get(srv.URL)
				require.NoError(b, err)
				n, err := io.Copy(io.Discard, resp.Body)
				require.NoError(b, err)
				resp.Body.Close()
				require.Equal(b, http.StatusOK, resp.StatusCode)
				return int(n)
			}
			b.ReportMetric(float64(scrape()), "bytes/scrape")
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			for b.Loop() {
				scrape()
			}
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
		})
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
