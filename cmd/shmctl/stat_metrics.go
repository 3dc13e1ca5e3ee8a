package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/internal/segfile"
	"github.com/shmq/shmq/internal/units"
	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/shm"
)

// metricsStatReport is what stat prints for a metrics set; its JSON names are a stable
// interface, like statReport's.
type metricsStatReport struct {
	Name       string     `json:"name"`
	Path       string     `json:"path"`
	Kind       string     `json:"kind"`
	Version    string     `json:"version"`
	DataOffset uint64     `json:"data_offset"`
	DataSize   uint64     `json:"data_size"`
	CreatorPID int        `json:"creator_pid"`
	Created    time.Time  `json:"created"`
	Mode       string     `json:"mode"`
	UID        int        `json:"uid"`
	GID        int        `json:"gid"`
	Peers      []peerJSON `json:"peers"`
	// ProcessesAlive and ProcessesDead count processes, not peer entries, as for rings.
	ProcessesAlive int `json:"processes_alive"`
	ProcessesDead  int `json:"processes_dead"`
	// Metrics is every series with its value; omitted when the set cannot be read, and
	// MetricsError says why.
	Metrics      *metrics.Snapshot `json:"metrics,omitempty"`
	MetricsError string            `json:"metrics_error,omitempty"`
}

// runStatMetrics is stat for a metrics set: the segment as for any kind, then its series.
// s is the inspected segment; the series are read through a read-only metrics view of the
// same name. A set that cannot be read is reported, not fatal, as a ring's state is.
func runStatMetrics(cmd *cobra.Command, s *shm.Segment, opts shm.Options) error {
	d := s.Descriptor()
	r := metricsStatReport{
		Name: s.Name(), Path: filepath.Join(s.Dir(), s.Name()),
		Kind: d.Kind.String(), Version: fmt.Sprintf("%d.%d", d.VersionMajor, d.VersionMinor),
		DataOffset: d.DataOffset, DataSize: d.DataSize,
		CreatorPID: int(d.CreatorPID), Created: d.Created.UTC(),
		Mode: fmt.Sprintf("%04o", uint32(s.Mode().Perm())), UID: s.UID(), GID: s.GID(),
		Peers: []peerJSON{},
	}
	peers, err := s.Peers()
	if err != nil {
		return segmentError("stat", s.Name(), err)
	}
	for _, p := range peers {
		r.Peers = append(r.Peers, peerJSON{Index: p.Index, Role: "recorder", PID: p.PID, Alive: p.Alive, Attached: p.Attached.UTC()})
	}
	r.ProcessesAlive, r.ProcessesDead = segfile.Processes(peers)
	if snap, err := metrics.Read(s.Name(), opts); err != nil {
		r.MetricsError = segmentError("read", s.Name(), err).Error()
	} else {
		r.Metrics = &snap
	}
	if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
		return writeJSON(cmd.OutOrStdout(), r)
	}
	printStatMetrics(cmd, r)
	return nil
}

func printStatMetrics(cmd *cobra.Command, r metricsStatReport) {
	out := cmd.OutOrStdout()
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "segment\t%s (%s)\n", r.Name, r.Path)
	fmt.Fprintf(tw, "kind\t%s, layout %s\n", r.Kind, r.Version)
	fmt.Fprintf(tw, "data\t%s at offset %d\n", units.FormatSize(r.DataSize), r.DataOffset)
	fmt.Fprintf(tw, "created\t%s by pid %d\n", r.Created.Format(time.RFC3339), r.CreatorPID)
	fmt.Fprintf(tw, "file\tmode %s, uid %d, gid %d\n", r.Mode, r.UID, r.GID)
	fmt.Fprintf(tw, "processes\t%d alive, %d dead (%s)\n", r.ProcessesAlive, r.ProcessesDead, plural(len(r.Peers), "peer entry"))
	if r.MetricsError != "" {
		fmt.Fprintf(tw, "metrics error\t%s\n", r.MetricsError)
	}
	if r.Metrics != nil {
		fmt.Fprintf(tw, "series\t%d\n", len(r.Metrics.Series))
	}
	tw.Flush()
	if r.Metrics == nil {
		return
	}
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERIES\tTYPE\tUNIT\tVALUE")
	for _, s := range r.Metrics.Series {
		unit := s.Unit
		if unit == "" {
			unit = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.ID(), s.Type, unit, seriesValue(s))
	}
	tw.Flush()
}

// seriesValue is a series' value in one cell: a number, or a histogram's count,
// percentiles, maximum and mean (and the values it refused, if any).
func seriesValue(s metrics.Series) string {
	switch s.Type {
	case metrics.TypeCounter:
		return strconv.FormatUint(s.Counter, 10)
	case metrics.TypeGauge:
		return strconv.FormatInt(s.Gauge, 10)
	}
	h := s.Histogram
	if h == nil {
		return "-"
	}
	v := fmt.Sprintf("count %d", h.Count)
	if h.Count > 0 {
		v += fmt.Sprintf(" p50 %d p95 %d p99 %d max %d mean %.1f", h.P50, h.P95, h.P99, h.Max, h.Mean)
	}
	if h.OutOfRange > 0 {
		v += fmt.Sprintf(" out-of-range %d", h.OutOfRange)
	}
	return v
}
