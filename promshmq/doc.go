// Package promshmq exports the counters that shmq segments keep in shared memory as
// Prometheus metrics: a Collector reads every segment of a directory (or the ones named),
// read-only, on each scrape, as node_exporter reads a host. `shmctl serve-metrics` serves it
// over HTTP; a program that already serves /metrics registers a Collector with its own
// registry.
//
// Only programs that import this package depend on the Prometheus client; the rest of shmq
// does not import it.
//
// # Metrics
//
// Every metric is labelled with the segment's name and kind (spsc, mpmc, topic, ...);
// counters end in _total, sizes are in bytes, times in seconds, fill levels are ratios from 0
// to 1. For every shmq segment in the directory:
//
//	shmq_segment_up                          1 if the segment was read, 0 if it is damaged or unreadable
//	shmq_segment_data_bytes                  size of the data region
//	shmq_segment_created_timestamp_seconds   when it was created
//	shmq_segment_processes{state}            processes attached, "alive" or "dead" (died attached)
//
// For rings (spsc, mpmc) and topics, summed over every process that ever attached:
//
//	shmq_write_messages_total, shmq_read_messages_total   messages written and read
//	shmq_write_bytes_total, shmq_read_bytes_total         payload bytes written and read
//	shmq_write_full_total                  times a writer found the ring full
//	shmq_read_empty_total                  times a reader found the ring empty
//	shmq_read_rejected_total               records readers rejected
//	shmq_drops_total                       MPMC slots skipped for a writer that died or aborted
//	shmq_futex_waits_total{side}           sleeps in the kernel, side "write" or "read"
//	shmq_futex_wakes_total{side}           wake-up system calls made for the other side
//	shmq_futex_late_wakes_total{side}      sleeps that timed out with the condition already true
//	shmq_ring_used_ratio                   fill level (topics: the slowest live subscriber's lag over the slots)
//	shmq_ring_endpoints{side}              writer and reader endpoints of running processes
//	shmq_ring_asleep{side}                 running processes with a writer or reader asleep
//	shmq_ring_dead_sleepers                waiting marks of processes that died asleep, not yet cleared
//	shmq_ring_writer_state{state}          1 for the stream's state: none, attached, dead or ended
//
// For each subscription of a topic, labelled also with subscription (its entry's index) and
// subscriber (its durable name, empty for an anonymous one):
//
//	shmq_topic_subscriber_lag_messages           records published that it has not released
//	shmq_topic_subscriber_missed_messages_total  records it missed (lapped under Overwrite, skipped under Latest)
//	shmq_topic_subscriber_alive                  1 if a running process holds it
//
// A metrics set (package metrics, kind "metrics") exports its own series under their own
// names, with the set's name and kind as labels besides their own (a series label called
// name or kind becomes exported_name, exported_kind, prefixed again while the key is
// taken): counters as counters, gauges as
// gauges, histograms as summaries (quantiles 0.5, 0.9, 0.95, 0.99, 0.999, the count, and a
// sum computed as mean times count: a histogram keeps no exact sum), plus
// <name>_out_of_range_total for the values a histogram refused. Values recorded in
// nanoseconds, microseconds or milliseconds are converted to seconds, and the unit
// (seconds, bytes) is appended to the name unless it ends with it already:
// bus_delivery_latency in nanoseconds becomes bus_delivery_latency_seconds. Series of
// several sets that share a name are one family, shown with the help of the first one read;
// a series that would break the scrape (a name another family has with another type, or
// that is the collector's own, a summary's _count or _sum, a series sent already) is left
// out, so that one set cannot fail the scrape of the others.
//
// Files in the directory that are not shmq segments are passed over.
//
// # Kinds
//
// Each segment kind's metrics come from a reader registered for that kind inside this
// package (ring.go for the ring kinds, metrics.go for metrics sets); a segment of a kind
// with no reader exports the segment metrics only. Adding a kind is adding a file with its
// reader. Because a metrics set's series are only known once it is read, the Collector is an
// unchecked collector: its Describe sends nothing.
package promshmq
