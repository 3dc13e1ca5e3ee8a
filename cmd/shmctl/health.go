package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/bus"
)

func newHealthCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health NAME [--json]",
		Short: "Check the health of an event bus",
		Long: "Check the event bus NAME from its segments, without changing anything: each Reliable\n" +
			"subscription's queue (depth, fill, live workers), the dead-letter queue, and from the\n" +
			"bus's shared metrics, read twice --window apart, each subscription's error rate and\n" +
			"slow handlers in that window (--window 0: the error rate over the bus's lifetime, no\n" +
			"slow-handler check). The state is healthy, degraded or unhealthy, with the reasons.\n" +
			"Exit status 0 when healthy or degraded, 1 when unhealthy or the bus cannot be read.",
		Args: exactArgs(1, "a bus name"),
		RunE: runHealth,
	}
	cmd.Flags().Bool("json", false, "print JSON")
	cmd.Flags().Float64("near-full", bus.DefaultNearFull, "queue fill (0 to 1) reported as nearly full")
	cmd.Flags().Float64("max-error-rate", bus.DefaultMaxErrorRate, "failed handler calls (0 to 1) above which a subscription is degraded")
	cmd.Flags().Int64("queue-bytes", 0, "the bus's Config.QueueBytes, to report queues near their byte bound")
	cmd.Flags().Duration("window", time.Second, "how long to watch the metrics for error rate and slow handlers")
	return cmd
}

func runHealth(cmd *cobra.Command, args []string) error {
	nearFull, _ := cmd.Flags().GetFloat64("near-full")
	if !(nearFull > 0 && nearFull <= 1) {
		return usagef("--near-full %v is not in (0, 1]", nearFull)
	}
	maxErr, _ := cmd.Flags().GetFloat64("max-error-rate")
	if !(maxErr > 0 && maxErr <= 1) {
		return usagef("--max-error-rate %v is not in (0, 1]", maxErr)
	}
	window, _ := cmd.Flags().GetDuration("window")
	queueBytes, _ := cmd.Flags().GetInt64("queue-bytes")
	if window < 0 || queueBytes < 0 {
		return usagef("--window and --queue-bytes must not be negative")
	}
	th := bus.Thresholds{NearFull: nearFull, MaxErrorRate: maxErr, QueueBytes: queueBytes, LastDeadLetters: -1}
	if window > 0 {
		m, err := bus.ReadMetrics(args[0], options(cmd))
		if err != nil {
			return segmentError("health", args[0], err)
		}
		th.Previous = &m
		time.Sleep(window)
	}
	h, err := bus.Inspect(args[0], options(cmd), th)
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
			fmt.Fprintln(tw, "SUBSCRIPTION\tDEPTH\tBYTES\tCAPACITY\tFILL\tWORKERS")
			for _, q := range h.Queues {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f%%\t%d\n", q.Subscription, q.Depth, q.Bytes, q.Capacity, 100*q.Utilisation, q.Workers)
			}
			tw.Flush()
		}
		if h.Metrics != nil {
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SUBSCRIPTION\tMODE\tDELIVERED\tFAILED\tRETRIED\tDEAD-LETTERED\tDROPPED\tSLOW\tLATENCY P50\tP99")
			for _, s := range h.Metrics.Subscriptions {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%v\t%v\n", dash(s.Subscription), s.Mode, s.Delivered, s.Failed,
					s.Retried, s.DeadLettered, s.Dropped+s.Conflated, s.Slow, s.Latency.P50, s.Latency.P99)
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

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
