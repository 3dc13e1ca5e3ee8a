package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/dlq"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
)

func newDLQCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq NAME [list|replay|purge] [--json] [--to RING] [--timeout D]",
		Short: "List, replay or purge a dead-letter queue",
		Long: "Work on the dead-letter queue NAME (a segment of kind dlq).\n\n" +
			"  list    (the default) show every entry, oldest first, without consuming any:\n" +
			"          sequence, state, attempts, when, origin ring, event type and id (when\n" +
			"          the data is an envelope), size and last error. Read-only.\n" +
			"  replay  write each entry back, oldest first, to the ring named by its origin\n" +
			"          (or --to RING for all), as one record of the type it had; an entry is\n" +
			"          removed only once written. Stops at the first entry that cannot be\n" +
			"          written, which stays in the queue. An event bus's NAME.dlq (without\n" +
			"          --to) goes through the bus: each event back to the queue of the\n" +
			"          subscription that failed it, if it is still registered.\n" +
			"  purge   remove every entry (except those a live replay holds).",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("dlq needs a segment NAME and at most one action (list, replay, purge)")
			}
			if len(args) == 2 && args[1] != "list" && args[1] != "replay" && args[1] != "purge" {
				return usagef("unknown dlq action %q (list, replay, purge)", args[1])
			}
			return nil
		},
		RunE: runDLQ,
	}
	cmd.Flags().Bool("json", false, "list: print JSON")
	cmd.Flags().String("to", "", "replay: write every entry to this ring instead of its origin")
	cmd.Flags().Duration("timeout", time.Second, "replay: how long to wait for room in a full ring")
	return cmd
}

func runDLQ(cmd *cobra.Command, args []string) error {
	name, action := args[0], "list"
	if len(args) == 2 {
		action = args[1]
	}
	if cmd.Flags().Changed("json") && action != "list" {
		return usagef("--json applies to list only")
	}
	if (cmd.Flags().Changed("to") || cmd.Flags().Changed("timeout")) && action != "replay" {
		return usagef("--to and --timeout apply to replay only")
	}
	switch action {
	case "replay":
		return replayDLQ(cmd, name)
	case "purge":
		q, err := dlq.Open(name, options(cmd))
		if err != nil {
			return segmentError("dlq purge", name, err)
		}
		defer q.Close()
		n, err := q.Purge()
		if err != nil {
			return segmentError("dlq purge", name, err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "purged %d entries from %s\n", n, name)
		return nil
	}
	return listDLQ(cmd, name)
}

// dlqEntry is one line of `dlq list --json`.
type dlqEntry struct {
	Seq        uint64    `json:"seq"`
	State      string    `json:"state"`
	HolderPID  int       `json:"holder_pid,omitempty"`
	HolderDead bool      `json:"holder_dead,omitempty"`
	Attempts   uint32    `json:"attempts"`
	DeadAt     time.Time `json:"dead_at"`
	Origin     string    `json:"origin"`
	Type       uint32    `json:"record_type"`
	Size       int       `json:"size"`
	Error      string    `json:"error"`
	EventType  string    `json:"event_type,omitempty"`
	EventID    string    `json:"event_id,omitempty"`
	Source     string    `json:"source,omitempty"`
}

func listDLQ(cmd *cobra.Command, name string) error {
	q, err := dlq.Inspect(name, options(cmd))
	if err != nil {
		return segmentError("dlq list", name, err)
	}
	defer q.Close()
	entries, lerr := q.List()
	if lerr != nil && !errors.Is(lerr, dlq.ErrCorrupt) {
		return segmentError("dlq list", name, lerr)
	}
	out := make([]dlqEntry, 0, len(entries))
	for _, e := range entries {
		d := dlqEntry{Seq: e.Seq, State: e.State.String(), HolderPID: e.HolderPID, HolderDead: e.HolderDead,
			Attempts: e.Attempts, DeadAt: e.DeadAt, Origin: e.Origin, Type: e.Type, Size: len(e.Data), Error: e.Err}
		if v, err := envelope.Parse(e.Data); err == nil {
			d.EventType, d.EventID, d.Source = string(v.Type()), v.ID.String(), string(v.Source())
		}
		out = append(out, d)
	}
	if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
		if err := writeJSON(cmd.OutOrStdout(), out); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tSTATE\tATTEMPTS\tDEAD AT\tORIGIN\tEVENT\tSIZE\tERROR")
		for _, d := range out {
			state := d.State
			if d.HolderPID != 0 {
				state = fmt.Sprintf("%s(pid %d", state, d.HolderPID)
				if d.HolderDead {
					state += ", dead"
				}
				state += ")"
			}
			event := fmt.Sprintf("type %d", d.Type)
			if d.EventType != "" {
				event = d.EventType + " " + d.EventID
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%d\t%s\n", d.Seq, state, d.Attempts,
				d.DeadAt.Format(time.RFC3339), dlqOrDash(d.Origin), event, d.Size, dlqOneLine(d.Error))
		}
		tw.Flush()
		fmt.Fprintf(cmd.OutOrStdout(), "%d entries (capacity %d)\n", len(out), q.Cap())
	}
	if lerr != nil {
		return segmentError("dlq list", name, lerr) // the good entries are printed above
	}
	return nil
}

func replayDLQ(cmd *cobra.Command, name string) error {
	opts := options(cmd)
	if to, _ := cmd.Flags().GetString("to"); to == "" {
		if busName, ok := busOfDLQ(name, opts); ok {
			return replayBusDLQ(cmd, busName, name)
		}
	}
	q, err := dlq.Open(name, opts)
	if err != nil {
		return segmentError("dlq replay", name, err)
	}
	defer q.Close()
	sink := dlq.NewRingSink(opts, ring.Options{})
	sink.Timeout, _ = cmd.Flags().GetDuration("timeout")
	if sink.Timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	defer sink.Close()
	to, _ := cmd.Flags().GetString("to")
	write := sink.Write
	if to != "" {
		write = func(e dlq.Entry) error { e.Origin = to; return sink.Write(e) }
	}
	n, err := q.Replay(context.Background(), write)
	fmt.Fprintf(cmd.OutOrStdout(), "replayed %d entries from %s\n", n, name)
	if err != nil {
		// Not segmentError: the cause names the entry and the ring it could not be written to.
		return fmt.Errorf("dlq replay %s: %w", name, err)
	}
	return nil
}

func dlqOrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// dlqOneLine keeps a table row on one line.
func dlqOneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
