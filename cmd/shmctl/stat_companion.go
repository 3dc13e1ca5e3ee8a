package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/shm"
)

// companionJSON is a metrics set named after a segment (NAME.something), such as the
// counters a NATS bridge keeps for a topic it forwards (TOPIC.bridge.BRIDGE): stat shows it
// with the segment.
type companionJSON struct {
	Name    string            `json:"name"`
	Metrics *metrics.Snapshot `json:"metrics,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// companions reads the metrics sets whose names start with name + ".". Sets that cannot be
// read are listed with their error; other kinds are skipped.
func companions(name string, opts shm.Options) []companionJSON {
	names, err := shm.List(opts)
	if err != nil {
		return nil
	}
	slices.Sort(names)
	var out []companionJSON
	for _, n := range names {
		if !strings.HasPrefix(n, name+".") {
			continue
		}
		s, err := shm.Inspect(n, opts)
		if err != nil {
			continue
		}
		kind := s.Descriptor().Kind
		s.Close()
		if kind != metrics.SegmentKind {
			continue
		}
		c := companionJSON{Name: n}
		if snap, err := metrics.Read(n, opts); err != nil {
			c.Error = err.Error()
		} else {
			c.Metrics = &snap
		}
		out = append(out, c)
	}
	return out
}

// printCompanions prints each companion set's series under its name.
func printCompanions(cmd *cobra.Command, cs []companionJSON) {
	for _, c := range cs {
		fmt.Fprintf(cmd.OutOrStdout(), "\nmetrics %s\n", c.Name)
		if c.Metrics == nil {
			fmt.Fprintf(cmd.OutOrStdout(), "  unreadable: %s\n", c.Error)
			continue
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
		for _, s := range c.Metrics.Series {
			fmt.Fprintf(tw, "  %s\t%s\n", s.Desc.ID(), seriesValue(s))
		}
		tw.Flush()
	}
}
