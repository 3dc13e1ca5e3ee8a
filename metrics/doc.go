// Package metrics keeps named counters, gauges and histograms in a shared-memory segment,
// so that any number of processes record into them at once and any process (shmctl, an
// exporter) reads them.
//
// A set is created once with its schema, the descriptions of its series (Desc: name,
// type, help, unit, constant labels, a histogram's range and precision). The schema is
// stored in the segment and is what every process that opens the set sees; OpenOrCreate
// and Check refuse a set created with another schema (ErrMismatch). Names and labels are the
// contract between the layer that defines them (the event bus) and whoever reads them.
//
//	set, _, err := metrics.OpenOrCreate("bus.metrics", []metrics.Desc{
//		{Name: "bus_published_total", Type: metrics.TypeCounter, Help: "events published"},
//		{Name: "bus_queue_depth", Type: metrics.TypeGauge, Help: "events queued"},
//		{Name: "bus_delivery_latency", Type: metrics.TypeHistogram, Unit: "nanoseconds",
//			Lowest: 1, Highest: int64(time.Minute), Digits: 3},
//	}, shm.Options{})
//	published, _ := set.Counter("bus_published_total") // look up once ...
//	published.Inc()                                     // ... then one atomic add, no allocation
//	latency, _ := set.Histogram("bus_delivery_latency")
//	latency.Record(int64(time.Since(sent)))
//
//	snap, _ := metrics.Read("bus.metrics", shm.Options{}) // any process, read-only
//	h, _ := snap.Find("bus_delivery_latency")
//	fmt.Println(h.Histogram.P50, h.Histogram.P99)
//
// Histograms keep HdrHistogram's bucket counts (github.com/HdrHistogram/hdrhistogram-go's
// layout) in the segment: recording a value is an atomic add on the count of its bucket,
// and a snapshot imports the counts into an hdrhistogram.Histogram, which computes the
// percentiles, mean and maximum. No percentile is computed here.
//
// The format is in format.go: the schema at the start of the data region, its length and
// checksum in the segment's (immutable, checksummed) descriptor, then one 128-byte-aligned
// block of values per series.
//
// # Caveats
//
// Everything read from the segment is untrusted: the schema is checked against the
// descriptor's checksum and decoded into Go memory once, at open; a snapshot validates the
// histogram counts it copies (ErrCorrupt). Reads (Open, Snapshot) are guarded against a
// file that another process truncated (shm.ErrTruncated, not SIGBUS); the recording
// handles are not, as the rings' endpoints are not: only the segment's owner can truncate
// it, and a handle recording into a truncated segment dies of SIGBUS.
//
// The recording handles (Counter, Gauge, Histogram) point into this process's own
// mapping of the set, which Close does not unmap: a handle stays safe to use after Close
// (what it records still reaches the segment), and the mapping goes when the Set and all
// its handles are unreachable. Each open writable Set holds one of the segment's 64 peer
// entries.
//
// Recorders contend only when they update the same word: two processes adding to one
// counter share its cache line, as they would share an atomic in one process.
package metrics
