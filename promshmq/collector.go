package promshmq

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shmq/shmq/internal/segfile"
	"github.com/shmq/shmq/shm"
)

// Options configures a Collector. The zero value reads every segment of the default
// directory ($SHMQ_DIR, else /dev/shm).
type Options struct {
	// Segments says where the segments are (Dir) and which other owners to trust
	// (TrustedOwners), as for shm.Inspect.
	Segments shm.Options
	// Names restricts the collector to these segments; empty means every shmq segment in
	// the directory, listed anew at each scrape. A named segment that is missing is left out.
	Names []string
}

// Collector is a prometheus.Collector of shmq segments. Each Collect lists the directory and
// reads the counters of each segment through a read-only mapping (shm.Inspect): it never
// changes a segment and never attaches to one (it is no peer, and takes no lock).
//
// The mappings are kept from one scrape to the next, because unmapping is what a scrape of
// many segments would spend most of its time on: a segment is unmapped when a scrape finds
// its name gone or naming another file, when it cannot be read, and at Close. Until then a
// removed segment's memory stays allocated, as it does for any process that has it mapped.
//
// Collect may be called from any number of goroutines at once, as a prometheus.Registry does
// (scrapes then take turns). It never waits for the processes using the segments.
type Collector struct {
	opts Options

	mu     sync.Mutex         // serializes scrapes and Close
	open   map[string]*mapped // segments kept mapped between scrapes, by name
	closed bool               // Close ran: map and unmap per scrape
}

// mapped is a segment kept mapped, and the file it was when it was mapped.
type mapped struct {
	seg  *shm.Segment
	file os.FileInfo
}

// NewCollector returns a Collector for opts.
func NewCollector(opts Options) *Collector {
	return &Collector{opts: Options{Segments: opts.Segments, Names: append([]string(nil), opts.Names...)},
		open: map[string]*mapped{}}
}

// Close unmaps the segments the collector keeps mapped. Later scrapes still work, each
// mapping and unmapping what it reads. Close is safe from any goroutine, any number of
// times; it waits for a scrape in progress.
func (c *Collector) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var first error
	for name, m := range c.open {
		if err := m.seg.Close(); err != nil && first == nil {
			first = err
		}
		delete(c.open, name)
	}
	return first
}

// Segment labels, in this order on every metric.
var segmentLabels = []string{"name", "kind"}

var (
	descUp = newDesc("shmq_segment_up",
		"1 if the segment was read, 0 if it is damaged or could not be read.")
	descDataBytes = newDesc("shmq_segment_data_bytes",
		"Size of the segment's data region in bytes.")
	descCreated = newDesc("shmq_segment_created_timestamp_seconds",
		"When the segment was created, in seconds since the Unix epoch.")
	descProcesses = newDesc("shmq_segment_processes",
		"Processes attached to the segment: state alive, or dead (died attached).", "state")
	descListError = prometheus.NewDesc("shmq_scrape_list_error",
		"The segment directory could not be listed.", nil, nil)
)

// fixedNames are the names of the collector's own metrics (newDesc), which no series of a
// metrics set may take.
var fixedNames = map[string]bool{"shmq_scrape_list_error": true}

// newDesc describes one of the collector's own metrics: the segment labels, then extra.
func newDesc(name, help string, extra ...string) *prometheus.Desc {
	fixedNames[name] = true
	return prometheus.NewDesc(name, help, append(append([]string(nil), segmentLabels...), extra...), nil)
}

// scrape is what one Collect has sent of the series of metrics sets, whose names and labels
// the collector does not choose. A Prometheus registry fails the whole scrape, every
// segment's metrics, for a family whose metrics disagree on type or help, a series sent
// twice, or a name that is a summary's _count or _sum; admit keeps the series of one set
// from doing that to the others.
type scrape struct {
	families map[string]family
	seen     map[string]bool // series sent: name and sorted label pairs
}

type family struct {
	typ  metricType
	help string
}

type metricType uint8

const (
	typeCounter metricType = iota + 1
	typeGauge
	typeSummary
)

func newScrape() *scrape { return &scrape{families: map[string]family{}, seen: map[string]bool{}} }

// admit reports whether the series name{labels=values} of type typ can be sent without the
// registry refusing the scrape, and the help to send it with: the family's, once a series
// of the name was sent (the help of a family is one text). It records the series as sent.
func (sc *scrape) admit(name string, typ metricType, help string, labels, values []string) (string, bool) {
	if fixedNames[name] {
		return "", false
	}
	f, known := sc.families[name]
	switch {
	case known && f.typ != typ:
		return "", false
	case known:
		help = f.help
	case sc.collides(name, typ):
		return "", false
	}
	pairs := make([]string, len(labels))
	for i := range labels {
		pairs[i] = labels[i] + "\xff" + values[i] // 0xff is in no UTF-8 string
	}
	slices.Sort(pairs)
	id := name + "\xfe" + strings.Join(pairs, "\xfe")
	if sc.seen[id] {
		return "", false
	}
	sc.seen[id] = true
	if !known {
		sc.families[name] = family{typ: typ, help: help}
	}
	return help, true
}

// collides reports whether a new family name of type typ would clash with a summary's
// _count or _sum series, as the registry checks.
func (sc *scrape) collides(name string, typ metricType) bool {
	for _, suffix := range []string{"_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && sc.families[base].typ == typeSummary {
			return true
		}
		if _, ok := sc.families[name+suffix]; typ == typeSummary && (ok || fixedNames[name+suffix]) {
			return true
		}
	}
	return false
}

// Describe sends nothing: the series of metrics sets (package metrics) are only known when
// they are read, so the Collector is an unchecked collector (see prometheus.Collector). The
// metrics it exports are listed in the package documentation.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect reads the segments and sends their metrics. A directory that cannot be listed is
// reported as an invalid metric, which fails the scrape; a segment that cannot be read gets
// shmq_segment_up 0; files that are not shmq segments are passed over.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	names := c.opts.Names
	if len(names) == 0 {
		var err error
		if names, err = shm.List(c.opts.Segments); err != nil {
			ch <- prometheus.NewInvalidMetric(descListError, err)
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	listed := make(map[string]bool, len(names))
	sc := newScrape()
	for _, name := range names {
		if listed[name] { // named twice: its series would be sent twice
			continue
		}
		listed[name] = true
		c.collectSegment(name, sc, ch)
	}
	for name, m := range c.open {
		if !listed[name] {
			m.seg.Close()
			delete(c.open, name)
		}
	}
}

// segment returns segment name mapped: the mapping kept from the last scrape if the name
// still refers to the same file, a new one otherwise (kept for the next scrape when the
// file did not change while it was mapped). keep is false when the caller must close it.
func (c *Collector) segment(name string) (seg *shm.Segment, keep bool, err error) {
	path := filepath.Join(c.opts.Segments.ResolvedDir(), name)
	before, statErr := os.Lstat(path)
	if m := c.open[name]; m != nil {
		if statErr == nil && os.SameFile(before, m.file) {
			return m.seg, true, nil
		}
		m.seg.Close()
		delete(c.open, name)
	}
	seg, err = shm.Inspect(name, c.opts.Segments)
	if err != nil || c.closed || statErr != nil {
		return seg, false, err
	}
	if after, err := os.Lstat(path); err != nil || !os.SameFile(before, after) {
		return seg, false, nil // replaced around Inspect: which file it mapped is not known
	}
	c.open[name] = &mapped{seg: seg, file: before}
	return seg, true, nil
}

// forget closes segment name if it is kept mapped: it could not be read.
func (c *Collector) forget(name string) {
	if m := c.open[name]; m != nil {
		m.seg.Close()
		delete(c.open, name)
	}
}

func (c *Collector) collectSegment(name string, sc *scrape, ch chan<- prometheus.Metric) {
	seg, keep, err := c.segment(name)
	if err != nil {
		if segfile.Shmq(c.opts.Segments.ResolvedDir(), name, err) {
			gauge(ch, descUp, 0, name, "")
		}
		return
	}
	if !keep {
		defer seg.Close()
	}
	d := seg.Descriptor()
	e := emitter{ch: ch, labels: []string{name, d.Kind.String()}, sc: sc}
	e.gauge(descDataBytes, float64(d.DataSize))
	e.gauge(descCreated, float64(d.Created.UnixNano())/1e9)
	up := 1.0
	peers, err := seg.Peers()
	if err != nil {
		up = 0
	} else {
		alive, dead := segfile.Processes(peers)
		e.gauge(descProcesses, float64(alive), "alive")
		e.gauge(descProcesses, float64(dead), "dead")
	}
	if k, ok := kindReader(d.Kind); ok && up == 1 {
		if err := k.collect(seg, c.opts.Segments, e); err != nil {
			up = 0
		}
	}
	if up == 0 {
		c.forget(name)
	}
	e.gauge(descUp, up)
}

// A kind exports what segments of one kind keep. Register one per kind with registerKind,
// from an init function in a file of this package.
type kind interface {
	// collect sends the metrics of seg, an inspected segment of the kind in the directory
	// of opts, through e; an error marks the segment down (what was sent before it stays).
	collect(seg *shm.Segment, opts shm.Options, e emitter) error
}

var kinds struct {
	mu sync.Mutex
	m  map[shm.Kind]kind
}

// registerKind makes k export the segments of shm kind sk. It panics on a second reader
// for the same kind: a programming error in this package.
func registerKind(sk shm.Kind, k kind) {
	kinds.mu.Lock()
	defer kinds.mu.Unlock()
	if kinds.m == nil {
		kinds.m = map[shm.Kind]kind{}
	}
	if _, dup := kinds.m[sk]; dup {
		panic("promshmq: two readers for kind " + strconv.Itoa(int(sk)))
	}
	kinds.m[sk] = k
}

func kindReader(sk shm.Kind) (kind, bool) {
	kinds.mu.Lock()
	defer kinds.mu.Unlock()
	k, ok := kinds.m[sk]
	return k, ok
}

// emitter sends the metrics of one segment, with its name and kind as the first labels.
type emitter struct {
	ch     chan<- prometheus.Metric
	labels []string
	sc     *scrape // the scrape's series so far
}

func (e emitter) counter(d *prometheus.Desc, v float64, extra ...string) {
	e.send(d, prometheus.CounterValue, v, extra)
}

func (e emitter) gauge(d *prometheus.Desc, v float64, extra ...string) {
	e.send(d, prometheus.GaugeValue, v, extra)
}

func (e emitter) send(d *prometheus.Desc, t prometheus.ValueType, v float64, extra []string) {
	values := e.labels
	if len(extra) > 0 {
		values = append(append(make([]string, 0, len(e.labels)+len(extra)), e.labels...), extra...)
	}
	m, err := prometheus.NewConstMetric(d, t, v, values...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	e.ch <- m
}

// gauge sends a gauge outside any segment's emitter.
func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	emitter{ch: ch}.send(d, prometheus.GaugeValue, v, labels)
}
