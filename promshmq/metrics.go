package promshmq

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/shm"
)

func init() { registerKind(metrics.SegmentKind, metricsKind{}) }

// metricsKind exports the series of metrics sets (package metrics) under their own names:
// counters as counters, gauges as gauges, histograms as summaries (quantiles 0.5, 0.9,
// 0.95, 0.99 and 0.999, the count, and a sum computed as mean times count, since a
// histogram keeps no exact sum), each with the set's segment name and kind "metrics" as
// labels besides its own. Values in nanoseconds, microseconds or milliseconds are
// converted to seconds, and a unit that Prometheus names (seconds, bytes) is appended to
// the name unless it ends with it already. A histogram's values refused as out of range
// are counted in <name>_out_of_range_total.
type metricsKind struct{}

var summaryQuantiles = []float64{0.5, 0.9, 0.95, 0.99, 0.999}

func (metricsKind) collect(seg *shm.Segment, opts shm.Options, e emitter) error {
	set, err := metrics.Inspect(seg.Name(), opts)
	if err != nil {
		return err
	}
	defer set.Close()
	snap, err := set.Snapshot()
	if err != nil {
		return err
	}
	for _, s := range snap.Series {
		name, scale := promName(s.Name, s.Unit, s.Type)
		labels := append([]string(nil), segmentLabels...)
		values := append([]string(nil), e.labels...)
		used := map[string]bool{}
		for _, l := range segmentLabels {
			used[l] = true
		}
		for _, l := range s.Labels {
			k := l.Key
			for used[k] { // the segment's labels come first, as Prometheus renames
				k = "exported_" + k
			}
			used[k] = true
			labels = append(labels, k)
			values = append(values, l.Value)
		}
		var typ metricType
		switch s.Type {
		case metrics.TypeCounter:
			typ = typeCounter
		case metrics.TypeGauge:
			typ = typeGauge
		case metrics.TypeHistogram:
			typ = typeSummary
		}
		if typ == 0 {
			continue
		}
		help, ok := e.sc.admit(name, typ, s.Help, labels, values)
		if !ok {
			continue // its name is another family's, or the series was sent already
		}
		d := prometheus.NewDesc(name, help, labels, nil)
		var m prometheus.Metric
		switch s.Type {
		case metrics.TypeCounter:
			m, err = prometheus.NewConstMetric(d, prometheus.CounterValue, float64(s.Counter)*scale, values...)
		case metrics.TypeGauge:
			m, err = prometheus.NewConstMetric(d, prometheus.GaugeValue, float64(s.Gauge)*scale, values...)
		case metrics.TypeHistogram:
			h := s.Histogram
			if h == nil {
				continue
			}
			q := map[float64]float64{}
			for i, v := range []int64{h.P50, h.P90, h.P95, h.P99, h.P999} {
				q[summaryQuantiles[i]] = float64(v) * scale
			}
			m, err = prometheus.NewConstSummary(d, uint64(max(h.Count, 0)), h.Mean*float64(h.Count)*scale, q, values...)
			oorName := strings.TrimSuffix(name, "_seconds") + "_out_of_range_total"
			if oorHelp, ok := e.sc.admit(oorName, typeCounter, "Values refused by "+s.Name+" as outside its range.", labels, values); ok {
				oor := prometheus.NewDesc(oorName, oorHelp, labels, nil)
				if om, oerr := prometheus.NewConstMetric(oor, prometheus.CounterValue, float64(h.OutOfRange), values...); oerr == nil {
					e.ch <- om
				} else {
					e.ch <- prometheus.NewInvalidMetric(oor, oerr)
				}
			}
		}
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err)
		}
		e.ch <- m
	}
	return nil
}

// promName is the Prometheus name of a series and the factor that converts its values to
// the base unit: time in seconds, sizes in bytes.
func promName(name, unit string, t metrics.Type) (string, float64) {
	scale, suffix := 1.0, ""
	switch unit {
	case "nanoseconds":
		scale, suffix = 1e-9, "seconds"
	case "microseconds":
		scale, suffix = 1e-6, "seconds"
	case "milliseconds":
		scale, suffix = 1e-3, "seconds"
	case "seconds", "bytes":
		suffix = unit
	}
	if suffix == "" {
		return name, scale
	}
	base, total := name, ""
	if t == metrics.TypeCounter && strings.HasSuffix(name, "_total") {
		base, total = strings.TrimSuffix(name, "_total"), "_total"
	}
	// A name that already carries the unit it was recorded in says what it no longer is.
	base = strings.TrimSuffix(base, "_"+unit)
	if !strings.HasSuffix(base, "_"+suffix) {
		base += "_" + suffix
	}
	return base + total, scale
}
