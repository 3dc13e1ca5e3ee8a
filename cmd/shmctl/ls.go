package main

import (
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/internal/units"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newLsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ls [--json]",
		Short: "List the segments in the directory",
		Long: "List every file in the directory that has a segment name, with its kind, size,\n" +
			"live and dead peers and state: ok, corrupt, truncated, version (another layout),\n" +
			"foreign (not a shmq segment), unsafe (symlink, not a regular file, other owner,\n" +
			"extra links). Nothing is changed.",
		Args: exactArgs(0, "no arguments"),
		RunE: runLs,
	}
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

// listEntry is one row of ls; its JSON names are a stable interface (README "shmctl JSON").
type listEntry struct {
	Name       string `json:"name"`
	Path       string `json:"path"`
	State      string `json:"state"`
	Error      string `json:"error,omitempty"`
	Kind       string `json:"kind,omitempty"`
	DataSize   uint64 `json:"data_size,omitempty"`
	SlotSize   uint32 `json:"slot_size,omitempty"`
	PeersAlive int    `json:"peers_alive"`
	PeersDead  int    `json:"peers_dead"`
}

func runLs(cmd *cobra.Command, args []string) error {
	opts := options(cmd)
	names, err := shm.List(opts)
	if err != nil {
		return fmt.Errorf("ls %s: %w", opts.ResolvedDir(), err)
	}
	entries := make([]listEntry, 0, len(names))
	for _, n := range names {
		entries = append(entries, inspectEntry(opts, n))
	}
	if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
		return writeJSON(cmd.OutOrStdout(), entries)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSIZE\tPEERS\tSTATE")
	for _, e := range entries {
		kind, size, peers := "-", "-", "-"
		if e.State == "ok" {
			kind, size = e.Kind, units.FormatSize(e.DataSize)
			peers = fmt.Sprintf("%d alive", e.PeersAlive)
			if e.PeersDead > 0 {
				peers += fmt.Sprintf(", %d dead", e.PeersDead)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, kind, size, peers, e.State)
	}
	return tw.Flush()
}

func inspectEntry(opts shm.Options, name string) listEntry {
	e := listEntry{Name: name, Path: filepath.Join(opts.ResolvedDir(), name)}
	s, err := shm.Inspect(name, opts)
	if err != nil {
		e.State = stateOf(err)
		e.Error = segmentError("inspect", name, err).Error()
		return e
	}
	defer s.Close()
	d := s.Descriptor()
	e.Kind, e.DataSize = d.Kind.String(), d.DataSize
	if spec, err := ring.SpecOf(d); err == nil {
		e.SlotSize = spec.SlotSize
	}
	peers, err := s.Peers()
	if err != nil {
		e.State, e.Error = "error", err.Error()
		return e
	}
	e.State = "ok"
	for _, p := range peers {
		if p.Alive {
			e.PeersAlive++
		} else {
			e.PeersDead++
		}
	}
	return e
}
