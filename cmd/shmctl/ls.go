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
			"extra links). Topics also show their policy and their live publishers and\n" +
			"subscribers. Nothing is changed.",
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
	// Topics only: the overflow policy, and the publishers and subscribers attached by live
	// processes.
	Policy      string `json:"policy,omitempty"`
	Publishers  *int   `json:"publishers,omitempty"`
	Subscribers *int   `json:"subscribers,omitempty"`
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
	topics := false // the TOPIC column only when there is a topic to show
	for _, e := range entries {
		topics = topics || e.Policy != ""
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	if topics {
		fmt.Fprintln(tw, "NAME\tKIND\tSIZE\tPEERS\tSTATE\tTOPIC")
	} else {
		fmt.Fprintln(tw, "NAME\tKIND\tSIZE\tPEERS\tSTATE")
	}
	for _, e := range entries {
		kind, size, peers := "-", "-", "-"
		if e.State == "ok" {
			kind, size = e.Kind, units.FormatSize(e.DataSize)
			peers = fmt.Sprintf("%d alive", e.PeersAlive)
			if e.PeersDead > 0 {
				peers += fmt.Sprintf(", %d dead", e.PeersDead)
			}
		}
		if !topics {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, kind, size, peers, e.State)
			continue
		}
		topic := ""
		if e.Policy != "" && e.Publishers != nil && e.Subscribers != nil {
			topic = fmt.Sprintf("%s, %s, %s", e.Policy, plural(*e.Publishers, "publisher"), plural(*e.Subscribers, "subscriber"))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, kind, size, peers, e.State, topic)
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
	spec, specErr := ring.SpecOf(d)
	if specErr == nil {
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
	if specErr == nil && spec.Kind == ring.Topic {
		e.Policy = spec.Policy.String()
		if st, err := ring.ReadStats(s); err == nil {
			e.Publishers, e.Subscribers = &st.WritersOpen, &st.ReadersOpen
		}
	}
	return e
}

// plural writes "1 publisher", "2 publishers".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
