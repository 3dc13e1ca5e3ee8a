package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/internal/segfile"
	"github.com/shmq/shmq/internal/units"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newLsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ls [--all] [--json]",
		Short: "List the segments in the directory",
		Long: "List the shmq segments in the directory, with their kind, size, the processes\n" +
			"attached (alive, and dead: died attached) and state: ok, corrupt, truncated,\n" +
			"version (another layout), unknown_kind, unsafe (other owner, extra links). Topics\n" +
			"also show their policy and their live publishers and subscribers. Files that are\n" +
			"not shmq segments (no shmq magic, symlinks, devices) are listed only with --all,\n" +
			"as foreign or unsafe. Nothing is changed.",
		Args: exactArgs(0, "no arguments"),
		RunE: runLs,
	}
	cmd.Flags().Bool("json", false, "print JSON")
	cmd.Flags().BoolP("all", "a", false, "also list files that are not shmq segments")
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
	PeersAlive int    `json:"peers_alive"` // peer-table entries of running processes
	PeersDead  int    `json:"peers_dead"`  // entries of processes that died attached
	// ProcessesAlive and ProcessesDead count processes, not entries: a process that has the
	// segment open twice holds two entries.
	ProcessesAlive int `json:"processes_alive"`
	ProcessesDead  int `json:"processes_dead"`
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
	all, _ := cmd.Flags().GetBool("all")
	entries := make([]listEntry, 0, len(names))
	for _, n := range names {
		e, shmq := inspectEntry(opts, n)
		if shmq || all {
			entries = append(entries, e)
		}
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
		fmt.Fprintln(tw, "NAME\tKIND\tSIZE\tPROCESSES\tSTATE\tTOPIC")
	} else {
		fmt.Fprintln(tw, "NAME\tKIND\tSIZE\tPROCESSES\tSTATE")
	}
	for _, e := range entries {
		kind, size, peers := "-", "-", "-"
		if e.State == "ok" {
			kind, size = e.Kind, units.FormatSize(e.DataSize)
			peers = fmt.Sprintf("%d alive", e.ProcessesAlive)
			if e.ProcessesDead > 0 {
				peers += fmt.Sprintf(", %d dead", e.ProcessesDead)
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

// inspectEntry describes segment file name, and says whether it is a shmq segment (one
// that opens, or a damaged one that begins with the shmq magic).
func inspectEntry(opts shm.Options, name string) (listEntry, bool) {
	e := listEntry{Name: name, Path: filepath.Join(opts.ResolvedDir(), name)}
	s, err := shm.Inspect(name, opts)
	if err != nil {
		e.State = stateOf(err)
		e.Error = segmentError("inspect", name, err).Error()
		return e, segfile.Shmq(opts.ResolvedDir(), name, err)
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
		return e, true
	}
	e.State = "ok"
	for _, p := range peers {
		if p.Alive {
			e.PeersAlive++
		} else {
			e.PeersDead++
		}
	}
	e.ProcessesAlive, e.ProcessesDead = segfile.Processes(peers)
	if specErr == nil && spec.Kind == ring.Topic {
		e.Policy = spec.Policy.String()
		if st, err := ring.ReadStats(s); err == nil {
			e.Publishers, e.Subscribers = &st.WritersOpen, &st.ReadersOpen
		}
	}
	return e, true
}

// plural writes "1 publisher", "2 publishers", "2 processes", "2 entries".
func plural(n int, noun string) string {
	switch {
	case n == 1:
		return "1 " + noun
	case strings.HasSuffix(noun, "s"):
		return fmt.Sprintf("%d %ses", n, noun)
	case strings.HasSuffix(noun, "y"):
		return fmt.Sprintf("%d %sies", n, noun[:len(noun)-1])
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
