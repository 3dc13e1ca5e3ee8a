package bus

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// The bus keeps its metrics in shared memory (package metrics), so that every process and
// `shmctl stat`, `shmctl health` read the same totals:
//
//	NAME.metrics    the bus's set: bus_published_total{priority}, and the delivery series
//	                of BestEffort and LatestOnly subscriptions summed over every process,
//	                labelled mode="best-effort" or mode="latest-only"
//	NAME.m.SUB      one set per Reliable subscription SUB, every series labelled
//	                subscription="SUB": what its workers in every process delivered,
//	                failed, retried and dead-lettered, what publishers found full, and its
//	                queue's depth, bytes and utilisation
//
// The series' names and labels are this package's contract with whoever reads them; the
// schemas below are their one home. Histograms record nanoseconds (Desc.Unit says so)
// under Prometheus names in seconds: an exporter divides by 1e9. bus_queue_utilisation is
// in parts per million of the fullest lane (a gauge holds an integer): 1,000,000 is full.

// Metric names.
const (
	MetricPublished    = "bus_published_total"
	MetricDelivered    = "bus_delivered_total"
	MetricFailed       = "bus_failed_total"
	MetricTimeouts     = "bus_timeouts_total"
	MetricRetried      = "bus_retried_total"
	MetricDeadLettered = "bus_dead_lettered_total"
	MetricDLQErrors    = "bus_dead_letter_errors_total"
	MetricDropped      = "bus_dropped_total"
	MetricConflated    = "bus_conflated_total"
	MetricMalformed    = "bus_malformed_total"
	MetricSlow         = "bus_slow_handlers_total"
	MetricQueueFull    = "bus_queue_full_total"
	MetricQueueDepth   = "bus_queue_depth"
	MetricQueueBytes   = "bus_queue_bytes"
	MetricQueueUtil    = "bus_queue_utilisation"
	MetricWorkers      = "bus_workers"
	MetricLatency      = "bus_delivery_latency_seconds"
	MetricHandlerTime  = "bus_handler_duration_seconds"
)

// Histogram geometry: 100 ns to 10 minutes, 2 significant digits (1%), in nanoseconds: a
// histogram of 3,584 buckets (28 KiB).
const (
	histLowest  = 100
	histHighest = int64(10 * time.Minute)
	histDigits  = 2
	unitNanos   = "nanoseconds"
)

func metricsName(bus string) string         { return bus + ".metrics" }
func subMetricsName(bus, sub string) string { return bus + ".m." + sub }
func modeLabel(mode string) []metrics.Label { return metrics.Labels("mode", mode) }
func subLabel(sub string) []metrics.Label   { return metrics.Labels("subscription", sub) }
func laneLabels(sub string, p envelope.Priority) []metrics.Label {
	return metrics.Labels("subscription", sub, "lane", p.String())
}

// deliverySchema is the series every subscription records into, with labels ls.
func deliverySchema(ls []metrics.Label) []metrics.Desc {
	c := func(name, help string) metrics.Desc {
		return metrics.Desc{Name: name, Type: metrics.TypeCounter, Help: help, Unit: "events", Labels: ls}
	}
	h := func(name, help string) metrics.Desc {
		return metrics.Desc{Name: name, Type: metrics.TypeHistogram, Help: help, Unit: unitNanos, Labels: ls,
			Lowest: histLowest, Highest: histHighest, Digits: histDigits}
	}
	return []metrics.Desc{
		c(MetricDelivered, "handler calls that acknowledged (returned nil in time)"),
		c(MetricFailed, "handler calls that returned an error or timed out"),
		c(MetricTimeouts, "handler calls that did not return within the Reliable Timeout (counted in failed too)"),
		c(MetricRetried, "attempts after a failure"),
		c(MetricDeadLettered, "events put in the dead-letter queue after their last attempt"),
		c(MetricDLQErrors, "events the dead-letter queue refused (full): the worker holds them and tries again"),
		c(MetricDropped, "best-effort and latest-only events of any type lost to a publisher that lapped the subscriber"),
		c(MetricConflated, "latest-only events the subscription takes, replaced by a newer one of their type before delivery"),
		c(MetricMalformed, "records that were not a valid envelope"),
		c(MetricSlow, "handler calls longer than Config.SlowHandler"),
		h(MetricLatency, "publish to handler start, from the envelope's time"),
		h(MetricHandlerTime, "handler call duration"),
	}
}

// busSchema is the schema of NAME.metrics.
func busSchema() []metrics.Desc {
	var s []metrics.Desc
	for p := range envelope.Priorities {
		s = append(s, metrics.Desc{Name: MetricPublished, Type: metrics.TypeCounter, Unit: "events",
			Help: "events published, by priority", Labels: metrics.Labels("priority", envelope.Priority(p).String())})
	}
	s = append(s, deliverySchema(modeLabel(BestEffort{}.mode()))...)
	return append(s, deliverySchema(modeLabel(LatestOnly{}.mode()))...)
}

// subSchema is the schema of NAME.m.SUB.
func subSchema(sub string) []metrics.Desc {
	ls := subLabel(sub)
	s := deliverySchema(ls)
	g := func(name, unit, help string, ls []metrics.Label) metrics.Desc {
		return metrics.Desc{Name: name, Type: metrics.TypeGauge, Help: help, Unit: unit, Labels: ls}
	}
	s = append(s,
		metrics.Desc{Name: MetricQueueFull, Type: metrics.TypeCounter, Unit: "events", Labels: ls,
			Help: "publishes that found the queue full (events or bytes)"},
		g(MetricQueueBytes, "bytes", "envelope bytes queued (the byte bound's count; see Config.QueueBytes)", ls),
		g(MetricQueueUtil, "ppm", "fill of the fullest lane in parts per million, sampled", ls),
		g(MetricWorkers, "workers", "workers of live processes, sampled", ls),
	)
	for p := range envelope.Priorities {
		s = append(s, g(MetricQueueDepth, "events", "events queued or in a handler, sampled", laneLabels(sub, envelope.Priority(p))))
	}
	return s
}

// deliveryMetrics are the recording handles of one subscription's delivery series. Nil
// handles record nothing (a set that could not be opened).
type deliveryMetrics struct {
	delivered, failed, timeouts, retried, deadLettered, dlqErrors *metrics.Counter
	dropped, conflated, malformed, slow                           *metrics.Counter
	latency, handler                                              *metrics.Histogram
}

func (m *deliveryMetrics) bind(set *metrics.Set, ls []metrics.Label) error {
	var errs []error
	c := func(name string) *metrics.Counter {
		h, err := set.Counter(name, ls...)
		errs = append(errs, err)
		return h
	}
	h := func(name string) *metrics.Histogram {
		h, err := set.Histogram(name, ls...)
		errs = append(errs, err)
		return h
	}
	*m = deliveryMetrics{
		delivered: c(MetricDelivered), failed: c(MetricFailed), timeouts: c(MetricTimeouts),
		retried: c(MetricRetried), deadLettered: c(MetricDeadLettered), dlqErrors: c(MetricDLQErrors),
		dropped: c(MetricDropped), conflated: c(MetricConflated), malformed: c(MetricMalformed),
		slow: c(MetricSlow), latency: h(MetricLatency), handler: h(MetricHandlerTime),
	}
	return errors.Join(errs...)
}

// busMetrics is a process's handle on NAME.metrics.
type busMetrics struct {
	set       *metrics.Set
	published [envelope.Priorities]*metrics.Counter
	modes     map[string]*deliveryMetrics // by Mode.mode()
}

func openBusMetrics(bus string, opts shm.Options) (*busMetrics, error) {
	set, _, err := metrics.OpenOrCreate(metricsName(bus), busSchema(), opts)
	if err != nil {
		return nil, fmt.Errorf("bus metrics: %w", err)
	}
	m := &busMetrics{set: set, modes: map[string]*deliveryMetrics{}}
	var errs []error
	for p := range envelope.Priorities {
		var err error
		m.published[p], err = set.Counter(MetricPublished, metrics.Labels("priority", envelope.Priority(p).String())...)
		errs = append(errs, err)
	}
	for _, mode := range []string{BestEffort{}.mode(), LatestOnly{}.mode()} {
		d := &deliveryMetrics{}
		errs = append(errs, d.bind(set, modeLabel(mode)))
		m.modes[mode] = d
	}
	if err := errors.Join(errs...); err != nil {
		set.Close()
		return nil, fmt.Errorf("bus metrics: %w", err)
	}
	return m, nil
}

// subMetrics is a process's handle on NAME.m.SUB, for its workers or its publishers.
type subMetrics struct {
	set *metrics.Set
	deliveryMetrics
	queueFull *metrics.Counter
	bytes     *metrics.Gauge
	util      *metrics.Gauge
	workers   *metrics.Gauge
	depth     [envelope.Priorities]*metrics.Gauge
}

func openSubMetrics(bus, sub string, opts shm.Options) (*subMetrics, error) {
	set, _, err := metrics.OpenOrCreate(subMetricsName(bus, sub), subSchema(sub), opts)
	if err != nil {
		return nil, fmt.Errorf("bus metrics of %s: %w", sub, err)
	}
	m := &subMetrics{set: set}
	ls := subLabel(sub)
	errs := []error{m.bind(set, ls)}
	g := func(name string, ls []metrics.Label) *metrics.Gauge {
		h, err := set.Gauge(name, ls...)
		errs = append(errs, err)
		return h
	}
	m.queueFull, err = set.Counter(MetricQueueFull, ls...)
	errs = append(errs, err)
	m.bytes, m.util, m.workers = g(MetricQueueBytes, ls), g(MetricQueueUtil, ls), g(MetricWorkers, ls)
	for p := range envelope.Priorities {
		m.depth[p] = g(MetricQueueDepth, laneLabels(sub, envelope.Priority(p)))
	}
	if err := errors.Join(errs...); err != nil {
		set.Close()
		return nil, fmt.Errorf("bus metrics of %s: %w", sub, err)
	}
	return m, nil
}

func (m *subMetrics) close() {
	if m != nil && m.set != nil {
		m.set.Close()
	}
}

// observe records one handler call that started at start, for the event v, with result
// err, into m and the process's own counters c.
func (m *deliveryMetrics) observe(c *subCounters, slowAfter time.Duration, v *envelope.View, start time.Time, err error) {
	d := time.Since(start)
	c.handlerNanos.Add(uint64(d))
	_ = m.handler.Record(int64(d))
	if lat := start.UnixNano() - v.Time; lat >= 0 { // wall clocks of two processes may step
		_ = m.latency.Record(lat)
		c.latency.record(lat)
	}
	if d > slowAfter {
		c.slow.Add(1)
		m.slow.Inc()
	}
	if err == nil {
		c.delivered.Add(1)
		m.delivered.Inc()
		return
	}
	c.failed.Add(1)
	m.failed.Inc()
	if isTimeout(err) {
		c.timeouts.Add(1)
		m.timeouts.Inc()
	}
}

// sampleEvery is how often a process refreshes a queue's sampled gauges, from a worker or
// a publisher of the queue.
const sampleEvery = 100 * time.Millisecond

// sampleQueue sets the sampled gauges of a queue from its lanes' rings: the depth of each
// lane, the fullest lane's utilisation, and the workers of live processes (reader
// endpoints of the Critical lane: a worker has one per lane).
func sampleQueue(segs [envelope.Priorities]*shm.Segment, m *subMetrics) {
	if m == nil {
		return
	}
	var util float64
	for p, seg := range segs {
		st, err := ring.ReadStats(seg)
		if err != nil {
			continue
		}
		m.depth[p].Set(int64(st.Used))
		if st.Capacity > 0 {
			util = max(util, float64(st.Used)/float64(st.Capacity))
		}
		if p == int(envelope.Critical) {
			m.workers.Set(int64(st.ReadersOpen))
		}
	}
	m.util.Set(int64(util * 1e6))
}

// Metrics are a bus's shared-memory metrics, as any process reads them (ReadMetrics).
type Metrics struct {
	Bus       string                      `json:"bus"`
	Taken     time.Time                   `json:"taken"`
	Published [envelope.Priorities]uint64 `json:"published"` // by priority, every process
	// Subscriptions are the BestEffort and LatestOnly totals (Mode set, Subscription
	// empty), then each Reliable subscription by name.
	Subscriptions []SubscriptionMetrics `json:"subscriptions"`
}

// SubscriptionMetrics are one subscription's series (or one mode's, for the subscriptions
// without a name), summed over every process.
type SubscriptionMetrics struct {
	Subscription string                     `json:"subscription,omitempty"`
	Mode         string                     `json:"mode"`
	Delivered    uint64                     `json:"delivered"`
	Failed       uint64                     `json:"failed"`
	Timeouts     uint64                     `json:"timeouts"`
	Retried      uint64                     `json:"retried"`
	DeadLettered uint64                     `json:"dead_lettered"`
	DLQErrors    uint64                     `json:"dead_letter_errors"`
	Dropped      uint64                     `json:"dropped"`
	Conflated    uint64                     `json:"conflated"`
	Malformed    uint64                     `json:"malformed"`
	Slow         uint64                     `json:"slow_handlers"`
	QueueFull    uint64                     `json:"queue_full"`  // Reliable: publishes refused or made to wait
	QueueDepth   [envelope.Priorities]int64 `json:"queue_depth"` // Reliable: by lane, sampled
	QueueBytes   int64                      `json:"queue_bytes"` // Reliable
	Utilisation  float64                    `json:"utilisation"` // Reliable: fullest lane, 0 to 1, sampled
	Workers      int64                      `json:"workers"`     // Reliable: of live processes, sampled
	Latency      Percentiles                `json:"latency"`     // publish → handler start
	Handler      Percentiles                `json:"handler"`     // handler duration
}

// Percentiles summarise a latency histogram (HdrHistogram's, 1% precision).
type Percentiles struct {
	Count int64         `json:"count"`
	Mean  time.Duration `json:"mean"`
	P50   time.Duration `json:"p50"`
	P95   time.Duration `json:"p95"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
}

// ReadMetrics reads the metrics of the bus name in opts.Dir without changing anything: the
// bus's set and the set of every Reliable subscription in its registry (a subscription
// whose set is missing is listed without values). Errors: shm's (shm.ErrNotExist when
// there is no such bus), metrics' (metrics.ErrCorrupt).
func ReadMetrics(name string, opts shm.Options) (Metrics, error) {
	m := Metrics{Bus: name, Subscriptions: []SubscriptionMetrics{}}
	snap, err := metrics.Read(metricsName(name), opts)
	if err != nil {
		return m, err
	}
	m.Taken = snap.Taken
	for p := range envelope.Priorities {
		m.Published[p] = counterOf(&snap, MetricPublished, metrics.Labels("priority", envelope.Priority(p).String()))
	}
	for _, mode := range []string{BestEffort{}.mode(), LatestOnly{}.mode()} {
		s := SubscriptionMetrics{Mode: mode}
		s.fill(&snap, modeLabel(mode))
		m.Subscriptions = append(m.Subscriptions, s)
	}
	entries, err := readEntries(name, opts)
	if err != nil {
		return m, err
	}
	for _, e := range entries {
		s := SubscriptionMetrics{Subscription: e.name, Mode: Reliable{}.mode()}
		if snap, err := metrics.Read(subMetricsName(name, e.name), opts); err == nil {
			ls := subLabel(e.name)
			s.fill(&snap, ls)
			s.QueueFull = counterOf(&snap, MetricQueueFull, ls)
			s.QueueBytes = gaugeOf(&snap, MetricQueueBytes, ls)
			s.Utilisation = float64(gaugeOf(&snap, MetricQueueUtil, ls)) / 1e6
			s.Workers = gaugeOf(&snap, MetricWorkers, ls)
			for p := range envelope.Priorities {
				s.QueueDepth[p] = gaugeOf(&snap, MetricQueueDepth, laneLabels(e.name, envelope.Priority(p)))
			}
		}
		m.Subscriptions = append(m.Subscriptions, s)
	}
	return m, nil
}

// Find returns the metrics of the Reliable subscription sub, or, with sub empty, of the
// mode's unnamed subscriptions.
func (m *Metrics) Find(sub, mode string) (*SubscriptionMetrics, bool) {
	for i := range m.Subscriptions {
		s := &m.Subscriptions[i]
		if s.Subscription == sub && (sub != "" || s.Mode == mode) {
			return s, true
		}
	}
	return nil, false
}

func (s *SubscriptionMetrics) fill(snap *metrics.Snapshot, ls []metrics.Label) {
	s.Delivered = counterOf(snap, MetricDelivered, ls)
	s.Failed = counterOf(snap, MetricFailed, ls)
	s.Timeouts = counterOf(snap, MetricTimeouts, ls)
	s.Retried = counterOf(snap, MetricRetried, ls)
	s.DeadLettered = counterOf(snap, MetricDeadLettered, ls)
	s.DLQErrors = counterOf(snap, MetricDLQErrors, ls)
	s.Dropped = counterOf(snap, MetricDropped, ls)
	s.Conflated = counterOf(snap, MetricConflated, ls)
	s.Malformed = counterOf(snap, MetricMalformed, ls)
	s.Slow = counterOf(snap, MetricSlow, ls)
	s.Latency = percentilesOf(snap, MetricLatency, ls)
	s.Handler = percentilesOf(snap, MetricHandlerTime, ls)
}

func counterOf(snap *metrics.Snapshot, name string, ls []metrics.Label) uint64 {
	if s, ok := snap.Find(name, ls...); ok {
		return s.Counter
	}
	return 0
}

func gaugeOf(snap *metrics.Snapshot, name string, ls []metrics.Label) int64 {
	if s, ok := snap.Find(name, ls...); ok {
		return s.Gauge
	}
	return 0
}

func percentilesOf(snap *metrics.Snapshot, name string, ls []metrics.Label) Percentiles {
	s, ok := snap.Find(name, ls...)
	if !ok || s.Histogram == nil {
		return Percentiles{}
	}
	h := s.Histogram
	return Percentiles{Count: h.Count, Mean: time.Duration(h.Mean), P50: time.Duration(h.P50),
		P95: time.Duration(h.P95), P99: time.Duration(h.P99), Max: time.Duration(h.Max)}
}

// readEntries reads the registry of the bus name read-only.
func readEntries(name string, opts shm.Options) ([]subEntry, error) {
	seg, err := shm.Inspect(registryName(name), opts)
	if err != nil {
		return nil, err
	}
	defer seg.Close()
	if seg.Descriptor().Kind != Kind {
		return nil, fmt.Errorf("%w: %s is a %v segment", shm.ErrKind, seg.Name(), seg.Descriptor().Kind)
	}
	if len(seg.Data()) < regDataSize {
		return nil, fmt.Errorf("%w: registry of %d bytes", ErrCorrupt, len(seg.Data()))
	}
	entries, _ := (&registry{seg: seg}).readOnly()
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	return entries, nil
}
