package metrics_test

import (
	"fmt"
	"os"

	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/shm"
)

// A set's schema is fixed at creation; handles are looked up once and recording through
// them is one atomic add. Any process reads the set with Read.
func Example() {
	dir, _ := os.MkdirTemp("", "metrics-example-")
	defer os.RemoveAll(dir)
	opts := shm.Options{Dir: dir}

	set, created, err := metrics.OpenOrCreate("bus.metrics", []metrics.Desc{
		{Name: "bus_published_total", Type: metrics.TypeCounter, Help: "events published"},
		{Name: "bus_queue_depth", Type: metrics.TypeGauge, Help: "events queued"},
		{Name: "bus_delivery_latency", Type: metrics.TypeHistogram, Unit: "nanoseconds",
			Lowest: 1, Highest: 60e9, Digits: 3},
	}, opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer set.Close()
	published, _ := set.Counter("bus_published_total")
	depth, _ := set.Gauge("bus_queue_depth")
	latency, _ := set.Histogram("bus_delivery_latency")
	for i := range int64(1000) {
		published.Inc()
		depth.Add(1)
		latency.Record(1000 + i) // 1 to 2 µs
	}
	depth.Add(-400)

	// Any process, shmctl included: a read-only view.
	snap, err := metrics.Read("bus.metrics", opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	p, _ := snap.Find("bus_published_total")
	d, _ := snap.Find("bus_queue_depth")
	l, _ := snap.Find("bus_delivery_latency")
	fmt.Println("created:", created)
	fmt.Println("published:", p.Counter, "depth:", d.Gauge)
	fmt.Println("latency count:", l.Histogram.Count, "p50:", l.Histogram.P50, "p99:", l.Histogram.P99, "max:", l.Histogram.Max)
	// Output:
	// created: true
	// published: 1000 depth: 600
	// latency count: 1000 p50: 1499 p99: 1989 max: 1999
}
