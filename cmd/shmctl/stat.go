package main

import (
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/internal/units"
	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newStatCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stat NAME [--json]",
		Short: "Show a segment's descriptor, file and peers",
		Long: "Show a segment's descriptor, file mode and owner, exclusive roles held, its\n" +
			"peers with pid and liveness, and the ring: positions, fill level, counters and\n" +
			"sleeping waiters. For a topic: its policy, records published, the oldest held, the\n" +
			"lock's holder and every subscription (durable name, holder, position, lag, missed).\n" +
			"The segment is mapped read-only: looking changes nothing.",
		Args: exactArgs(1, "a segment NAME"),
		RunE: runStat,
	}
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

// statReport is what stat prints; its JSON names are a stable interface (README "shmctl JSON").
type statReport struct {
	Name       string     `json:"name"`
	Path       string     `json:"path"`
	Kind       string     `json:"kind"`
	Version    string     `json:"version"`
	DataOffset uint64     `json:"data_offset"`
	DataSize   uint64     `json:"data_size"`
	SlotSize   uint32     `json:"slot_size"`
	SlotCount  uint64     `json:"slot_count"`
	CreatorPID int        `json:"creator_pid"`
	Created    time.Time  `json:"created"`
	Mode       string     `json:"mode"`
	UID        int        `json:"uid"`
	GID        int        `json:"gid"`
	RolesHeld  []string   `json:"roles_held"`
	Peers      []peerJSON `json:"peers"`
	Ring       ring.Stats `json:"ring"`
	RingError  string     `json:"ring_error,omitempty"`
	// Topic is a topic's publish-subscribe state (omitted for other kinds).
	Topic      *ring.TopicStats `json:"topic,omitempty"`
	TopicError string           `json:"topic_error,omitempty"`
}

type peerJSON struct {
	Index    int       `json:"index"`
	Role     string    `json:"role"`
	PID      int       `json:"pid"`
	Alive    bool      `json:"alive"`
	Attached time.Time `json:"attached"`
	Writers  int       `json:"writers"` // writer endpoints the process has on the ring
	Readers  int       `json:"readers"` // reader endpoints
}

func runStat(cmd *cobra.Command, args []string) error {
	name := args[0]
	opts := options(cmd)
	s, err := shm.Inspect(name, opts)
	if err != nil {
		return segmentError("stat", name, err)
	}
	defer s.Close()
	if s.Descriptor().Kind == metrics.SegmentKind {
		return runStatMetrics(cmd, s, opts) // stat_metrics.go
	}
	r, err := buildStat(s)
	if err != nil {
		return segmentError("stat", name, err)
	}
	if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
		return writeJSON(cmd.OutOrStdout(), r)
	}
	printStat(cmd, r)
	return nil
}

func buildStat(s *shm.Segment) (statReport, error) {
	d := s.Descriptor()
	r := statReport{
		Name: s.Name(), Path: filepath.Join(s.Dir(), s.Name()),
		Kind:       d.Kind.String(),
		Version:    fmt.Sprintf("%d.%d", d.VersionMajor, d.VersionMinor),
		DataOffset: d.DataOffset, DataSize: d.DataSize,
		CreatorPID: int(d.CreatorPID), Created: d.Created.UTC(),
		Mode: fmt.Sprintf("%04o", uint32(s.Mode().Perm())), UID: s.UID(), GID: s.GID(),
		RolesHeld: []string{}, Peers: []peerJSON{},
	}
	if spec, err := ring.SpecOf(d); err == nil && spec.SlotSize != 0 {
		r.SlotSize, r.SlotCount = spec.SlotSize, d.DataSize/uint64(spec.SlotSize)
	}
	peers, err := s.Peers()
	if err != nil {
		return r, err
	}
	for _, p := range peers {
		w, rd, err := ring.PeerEndpoints(s, p.Index)
		if err != nil {
			return r, err
		}
		role := peerRole(w, rd)
		if d.Kind == ring.Topic {
			role = topicRole(w, rd)
		}
		r.Peers = append(r.Peers, peerJSON{Index: p.Index, Role: role, PID: p.PID, Alive: p.Alive, Attached: p.Attached.UTC(),
			Writers: w, Readers: rd})
	}
	// Impossible positions are reported, not fatal: the rest of stat is still worth seeing.
	if r.Ring, err = ring.ReadStats(s); err != nil {
		r.RingError = err.Error()
	}
	r.RolesHeld = r.Ring.RolesHeld
	if r.RolesHeld == nil {
		r.RolesHeld = []string{}
	}
	if d.Kind == ring.Topic {
		ts, err := ring.ReadTopicStats(s)
		if err != nil {
			r.TopicError = err.Error()
		}
		r.Topic = &ts
	}
	return r, nil
}

// topicRole is peerRole in a topic's words: "publisher", "subscriber",
// "publisher+subscriber" or "handle".
func topicRole(writers, readers int) string {
	switch {
	case writers > 0 && readers > 0:
		return "publisher+subscriber"
	case writers > 0:
		return "publisher"
	case readers > 0:
		return "subscriber"
	}
	return "handle"
}

// peerRole names what a process does with the ring: "writer", "reader", "writer+reader", or
// "handle" when it has the segment open without an endpoint.
func peerRole(writers, readers int) string {
	switch {
	case writers > 0 && readers > 0:
		return "writer+reader"
	case writers > 0:
		return "writer"
	case readers > 0:
		return "reader"
	}
	return "handle"
}

func printStat(cmd *cobra.Command, r statReport) {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "segment\t%s (%s)\n", r.Name, r.Path)
	fmt.Fprintf(tw, "kind\t%s, layout %s\n", r.Kind, r.Version)
	fmt.Fprintf(tw, "data\t%s at offset %d\n", units.FormatSize(r.DataSize), r.DataOffset)
	if r.SlotCount > 0 {
		fmt.Fprintf(tw, "slots\t%d x %s\n", r.SlotCount, units.FormatSize(uint64(r.SlotSize)))
	}
	fmt.Fprintf(tw, "created\t%s by pid %d\n", r.Created.Format(time.RFC3339), r.CreatorPID)
	fmt.Fprintf(tw, "file\tmode %s, uid %d, gid %d\n", r.Mode, r.UID, r.GID)
	roles := "none"
	if len(r.RolesHeld) > 0 {
		roles = fmt.Sprint(r.RolesHeld)
	}
	fmt.Fprintf(tw, "roles held\t%s\n", roles)
	alive := 0
	for _, p := range r.Peers {
		if p.Alive {
			alive++
		}
	}
	fmt.Fprintf(tw, "peers\t%d alive, %d dead\n", alive, len(r.Peers)-alive)
	g := r.Ring
	unit := "bytes"
	if r.SlotCount > 0 {
		unit = "slots"
	}
	if tp := r.Topic; tp != nil {
		fmt.Fprintf(tw, "policy\t%s\n", tp.Policy)
		fmt.Fprintf(tw, "published\t%d records, oldest held %d\n", tp.Published, tp.Oldest)
		lock := "free"
		if tp.LockHolderPID != 0 {
			lock = fmt.Sprintf("held by pid %d", tp.LockHolderPID)
		}
		fmt.Fprintf(tw, "lock\t%s\n", lock)
		fmt.Fprintf(tw, "publishers\t%s (%d publishers, %d subscribers attached)\n", g.WriterState, g.WritersOpen, g.ReadersOpen)
	} else {
		fmt.Fprintf(tw, "positions\twrite %d, read %d\n", g.WritePos, g.ReadPos)
		fmt.Fprintf(tw, "fill\t%d of %d %s (%.1f%%)\n", g.Used, g.Capacity, unit, 100*float64(g.Used)/float64(max(g.Capacity, 1)))
		fmt.Fprintf(tw, "writer\t%s (%d writers, %d readers attached)\n", g.WriterState, g.WritersOpen, g.ReadersOpen)
	}
	fmt.Fprintf(tw, "asleep\t%d readers, %d writers\n", g.ReadersAsleep, g.WritersAsleep)
	fmt.Fprintf(tw, "written\t%d messages, %s; full %d times; %d futex waits, %d wakes\n",
		g.Writers.Messages, units.FormatSize(g.Writers.Bytes), g.Writers.Full, g.Writers.FutexWaits, g.Writers.FutexWakes)
	fmt.Fprintf(tw, "read\t%d messages, %s; empty %d times; %d futex waits, %d wakes\n",
		g.Readers.Messages, units.FormatSize(g.Readers.Bytes), g.Readers.Empty, g.Readers.FutexWaits, g.Readers.FutexWakes)
	if g.Readers.Rejected > 0 {
		fmt.Fprintf(tw, "rejected\t%d records refused by readers\n", g.Readers.Rejected)
	}
	if drops := g.Readers.Drops + g.Writers.Drops; drops > 0 {
		fmt.Fprintf(tw, "drops\t%d slots skipped for dead writers\n", drops)
	}
	if r.RingError != "" {
		fmt.Fprintf(tw, "ring error\t%s\n", r.RingError)
	}
	if r.TopicError != "" {
		fmt.Fprintf(tw, "topic error\t%s\n", r.TopicError)
	}
	tw.Flush()
	if r.Topic != nil {
		printSubscriptions(cmd, r.Topic.Subscriptions)
	}
	if len(r.Peers) == 0 {
		return
	}
	tw = tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  INDEX\tROLE\tPID\tSTATE\tATTACHED")
	for _, p := range r.Peers {
		state := "alive"
		if !p.Alive {
			state = "dead"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\t%s\n", p.Index, p.Role, p.PID, state, p.Attached.Format(time.RFC3339))
	}
	tw.Flush()
}

// printSubscriptions prints a topic's subscription table: entry index, durable name or "-",
// the holder's pid and whether it runs ("-" when a durable subscription has no holder),
// the next sequence it reads, how many published records it has not released, and how
// many it missed.
func printSubscriptions(cmd *cobra.Command, subs []ring.TopicSubscription) {
	out := cmd.OutOrStdout()
	if len(subs) == 0 {
		fmt.Fprintln(out, "subscriptions  none")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SUB\tNAME\tPID\tALIVE\tPOSITION\tLAG\tMISSED")
	for _, sub := range subs {
		name, pid, alive := "-", "-", "-"
		if sub.Durable {
			name = sub.Name
		}
		if sub.Held {
			pid, alive = fmt.Sprint(sub.PID), "no"
			if sub.Alive {
				alive = "yes"
			}
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\t%d\t%d\n", sub.Index, name, pid, alive, sub.Position, sub.Lag, sub.Missed)
	}
	tw.Flush()
}
