package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/internal/segfile"
	"github.com/shmq/shmq/internal/units"
	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newStatCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stat NAME [--json]",
		Short: "Show a segment's descriptor, file and peers",
		Long: "Show a segment's descriptor, file mode and owner, exclusive roles held, the\n" +
			"processes attached (one line per process, however many peer entries it holds;\n" +
			"dead: died attached), and the ring: positions, fill level, counters and the\n" +
			"processes asleep in it (a process that died asleep is never counted asleep; the\n" +
			"mark it left is shown apart until a live peer clears it). For a topic: its policy,\n" +
			"records published, the oldest held, the lock's holder and every subscription\n" +
			"(durable name, holder, position, lag, missed). The segment is mapped read-only:\n" +
			"looking changes nothing.",
		Args:              exactArgs(1, "a segment NAME"),
		ValidArgsFunction: completeSegment,
		RunE:              runStat,
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
	// Processes groups the peer entries by process: a process that has the segment open
	// several times holds several entries.
	Processes      []processJSON `json:"processes"`
	ProcessesAlive int           `json:"processes_alive"`
	ProcessesDead  int           `json:"processes_dead"`
	Ring           ring.Stats    `json:"ring"`
	RingError      string        `json:"ring_error,omitempty"`
	// Topic is a topic's publish-subscribe state (omitted for other kinds).
	Topic      *ring.TopicStats `json:"topic,omitempty"`
	TopicError string           `json:"topic_error,omitempty"`
	// Companions are the metrics sets named after the segment (stat_companion.go).
	Companions []companionJSON `json:"companion_metrics,omitempty"`
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

// processJSON is one process attached to a segment, through one or more peer entries.
type processJSON struct {
	PID      int       `json:"pid"`
	Alive    bool      `json:"alive"`
	Role     string    `json:"role"`     // as peerJSON's, over all its entries
	Entries  []int     `json:"entries"`  // its peer-table entries
	Attached time.Time `json:"attached"` // its earliest entry's attach time
	Writers  int       `json:"writers"`
	Readers  int       `json:"readers"`
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
	r.Companions = companions(name, opts)
	if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
		return writeJSON(cmd.OutOrStdout(), r)
	}
	printStat(cmd, r)
	printCompanions(cmd, r.Companions)
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
		RolesHeld: []string{}, Peers: []peerJSON{}, Processes: []processJSON{},
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
	r.Processes = groupProcesses(peers, r.Peers, d.Kind == ring.Topic)
	r.ProcessesAlive, r.ProcessesDead = segfile.Processes(peers)
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

// groupProcesses folds peer entries into processes, as segfile.Processes counts them:
// running ones by pid, dead ones by pid and start time. peers and entries are parallel.
func groupProcesses(peers []shm.PeerInfo, entries []peerJSON, topic bool) []processJSON {
	type key struct {
		pid   int
		alive bool
		start uint64
	}
	out := []processJSON{}
	at := map[key]int{}
	for i, p := range peers {
		k := key{pid: p.PID, alive: p.Alive}
		if !p.Alive {
			k.start = p.StartTicks
		}
		j, ok := at[k]
		if !ok {
			j = len(out)
			at[k] = j
			out = append(out, processJSON{PID: p.PID, Alive: p.Alive, Attached: entries[i].Attached, Entries: []int{}})
		}
		pr := &out[j]
		pr.Entries = append(pr.Entries, p.Index)
		pr.Writers += entries[i].Writers
		pr.Readers += entries[i].Readers
		if entries[i].Attached.Before(pr.Attached) {
			pr.Attached = entries[i].Attached
		}
	}
	for i := range out {
		out[i].Role = peerRole(out[i].Writers, out[i].Readers)
		if topic {
			out[i].Role = topicRole(out[i].Writers, out[i].Readers)
		}
	}
	return out
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
	fmt.Fprintf(tw, "processes\t%d alive, %d dead (%s)\n", r.ProcessesAlive, r.ProcessesDead, plural(len(r.Peers), "peer entry"))
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
	asleep := fmt.Sprintf("%s with a reader, %s with a writer", plural(g.ReadersAsleep, "process"), plural(g.WritersAsleep, "process"))
	if g.DeadSleepers > 0 {
		asleep += fmt.Sprintf("; %s left by processes that died asleep", plural(g.DeadSleepers, "waiting mark"))
	}
	fmt.Fprintf(tw, "asleep\t%s\n", asleep)
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
	if len(r.Processes) == 0 {
		return
	}
	tw = tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  PID\tSTATE\tROLE\tENTRIES\tATTACHED")
	for _, p := range r.Processes {
		state := "alive"
		if !p.Alive {
			state = "dead"
		}
		entries := make([]string, len(p.Entries))
		for i, e := range p.Entries {
			entries[i] = strconv.Itoa(e)
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", p.PID, state, p.Role, strings.Join(entries, ","), p.Attached.Format(time.RFC3339))
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
