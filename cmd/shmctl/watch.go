package main

import (
	"fmt"
	"os"
	"os/signal"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newWatchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "watch NAME [--interval 1s] [--count N]",
		Short: "Print a ring's live rates until interrupted",
		Long: "Print, once per interval, the messages and bytes written and read per second, the\n" +
			"fill level and the sleeping waiters, until interrupted (or --count lines). For a\n" +
			"topic, FILL is the slowest subscriber's lag over the slots. Read-only.",
		Args: exactArgs(1, "a segment NAME"),
		RunE: runWatch,
	}
	cmd.Flags().Duration("interval", time.Second, "time between lines")
	cmd.Flags().Int("count", 0, "stop after this many lines (0: until interrupted)")
	return cmd
}

func runWatch(cmd *cobra.Command, args []string) error {
	name := args[0]
	interval, _ := cmd.Flags().GetDuration("interval")
	count, _ := cmd.Flags().GetInt("count")
	if interval <= 0 {
		return usagef("--interval must be positive")
	}
	s, err := shm.Inspect(name, options(cmd))
	if err != nil {
		return segmentError("watch", name, err)
	}
	defer s.Close()
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
	defer stop()

	prev, err := ring.ReadStats(s)
	if err != nil {
		return segmentError("watch", name, err)
	}
	prevAt := time.Now()
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TIME\tWRITE msg/s\tWRITE B/s\tREAD msg/s\tREAD B/s\tFILL\tASLEEP R/W\tWRITER\t")
	tw.Flush()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for line := 0; count == 0 || line < count; line++ {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		cur, err := ring.ReadStats(s)
		if err != nil {
			return segmentError("watch", name, err)
		}
		fill := 100 * float64(cur.Used) / float64(max(cur.Capacity, 1))
		if s.Descriptor().Kind == ring.Topic {
			if fill, err = topicFill(s); err != nil {
				return segmentError("watch", name, err)
			}
		}
		now := time.Now()
		secs := now.Sub(prevAt).Seconds()
		rate := func(a, b uint64) string { return fmt.Sprintf("%.0f", float64(a-b)/secs) }
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1f%%\t%d/%d\t%s\t\n", now.Format("15:04:05"),
			rate(cur.Writers.Messages, prev.Writers.Messages), rate(cur.Writers.Bytes, prev.Writers.Bytes),
			rate(cur.Readers.Messages, prev.Readers.Messages), rate(cur.Readers.Bytes, prev.Readers.Bytes),
			fill, cur.ReadersAsleep, cur.WritersAsleep, cur.WriterState)
		tw.Flush()
		prev, prevAt = cur, now
	}
	return nil
}

// topicFill is a topic's fill level in percent: the lag of its slowest live subscriber (at
// most a ring) over the slots.
func topicFill(s *shm.Segment) (float64, error) {
	st, err := ring.ReadTopicStats(s)
	if err != nil {
		return 0, err
	}
	lag := uint64(0)
	for _, sub := range st.Subscriptions {
		if sub.Held && sub.Alive {
			lag = max(lag, min(sub.Lag, st.Slots))
		}
	}
	return 100 * float64(lag) / float64(max(st.Slots, 1)), nil
}
