package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/bus"
)

func newHealthCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health NAME [--json]",
		Short: "Check the health of an event bus",
		Long: "Check the event bus NAME from its segments, without changing anything: each Reliable\n" +
			"subscription's queue (depth, fill, live workers) and the dead-letter queue. The state\n" +
			"is healthy, degraded or unhealthy, with the reasons. Exit status 0 when healthy or\n" +
			"degraded, 1 when unhealthy or the bus cannot be read.",
		Args: exactArgs(1, "a bus name"),
		RunE: runHealth,
	}
	cmd.Flags().Bool("json", false, "print JSON")
	cmd.Flags().Float64("near-full", bus.DefaultNearFull, "queue fill (0 to 1) reported as nearly full")
	return cmd
}

func runHealth(cmd *cobra.Command, args []string) error {
	nearFull, _ := cmd.Flags().GetFloat64("near-full")
	if !(nearFull > 0 && nearFull <= 1) {
		return usagef("--near-full %v is not in (0, 1]", nearFull)
	}
	h, err := bus.Inspect(args[0], options(cmd), bus.Thresholds{NearFull: nearFull, LastDeadLetters: -1})
	if err != nil {
		return segmentError("health", args[0], err)
	}
	out := cmd.OutOrStdout()
	if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
		if err := writeJSON(out, h); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "bus %s: %s\n", h.Bus, h.State)
		for _, r := range h.Reasons {
			sub := ""
			if r.Subscription != "" {
				sub = " " + r.Subscription
			}
			fmt.Fprintf(out, "  %s %s%s: %s\n", r.State, r.Check, sub, r.Detail)
		}
		if len(h.Queues) > 0 {
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SUBSCRIPTION\tDEPTH\tCAPACITY\tFILL\tWORKER ENDPOINTS")
			for _, q := range h.Queues {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f%%\t%d\n", q.Subscription, q.Depth, q.Capacity, 100*q.Utilisation, q.Workers)
			}
			tw.Flush()
		}
		fmt.Fprintf(out, "dead letters: %d\n", h.DeadLetters)
	}
	if h.State == bus.Unhealthy {
		return fmt.Errorf("health %s: %s", h.Bus, h.State)
	}
	return nil
}
