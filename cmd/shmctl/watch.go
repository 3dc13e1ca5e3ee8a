package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newWatchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "watch NAME [--interval 1s] [--count N] [--json]",
		Short: "Print a ring's live rates until interrupted",
		Long: "Print, once per interval, the messages and bytes written and read per second, the\n" +
			"fill level, the processes asleep reading and writing, and the writer's state, until\n" +
			"interrupted (or --count lines), in aligned columns (k, M, G: thousands, millions,\n" +
			"billions). With --json, one JSON object per interval and line, with the exact rates\n" +
			"and the counters so far. For a topic, FILL is the slowest subscriber's lag over the\n" +
			"slots. Read-only.",
		Args:              exactArgs(1, "a segment NAME"),
		ValidArgsFunction: completeSegment,
		RunE:              runWatch,
	}
	cmd.Flags().Duration("interval", time.Second, "time between lines")
	cmd.Flags().Int("count", 0, "stop after this many lines (0: until interrupted)")
	cmd.Flags().Bool("json", false, "print one JSON object per interval")
	return cmd
}

// watchSample is one interval of watch --json; its names are a stable interface (README
// "shmctl JSON").
type watchSample struct {
	Time             time.Time     `json:"time"`
	Seconds          float64       `json:"seconds"` // the interval measured
	WriteMsgsPerSec  float64       `json:"write_msgs_per_sec"`
	WriteBytesPerSec float64       `json:"write_bytes_per_sec"`
	ReadMsgsPerSec   float64       `json:"read_msgs_per_sec"`
	ReadBytesPerSec  float64       `json:"read_bytes_per_sec"`
	FillPercent      float64       `json:"fill_percent"`
	ReadersAsleep    int           `json:"readers_asleep"`
	WritersAsleep    int           `json:"writers_asleep"`
	DeadSleepers     int           `json:"dead_sleepers"`
	WriterState      string        `json:"writer_state"`
	Writers          ring.Counters `json:"writers"`
	Readers          ring.Counters `json:"readers"`
}

// watchColumns are the human table's columns: header and width. Every column but the last
// is right-aligned to its width, so that rows line up under the header whatever their values.
var watchColumns = []struct {
	head  string
	width int
}{{"TIME", 8}, {"WRITE msg/s", 11}, {"WRITE B/s", 9}, {"READ msg/s", 10}, {"READ B/s", 8}, {"FILL", 6},
	{"ASLEEP R/W", 10}, {"WRITER", 0}}

func watchRow(cells ...string) string {
	var sb strings.Builder
	for i, c := range cells {
		if i > 0 {
			sb.WriteString("  ")
		}
		if i == len(cells)-1 {
			sb.WriteString(c)
		} else {
			fmt.Fprintf(&sb, "%*s", watchColumns[i].width, c)
		}
	}
	return sb.String()
}

// formatRate prints a rate in at most 6 characters: 950, 12.3k, 1.26M, 3.4G.
func formatRate(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.3gG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func runWatch(cmd *cobra.Command, args []string) error {
	name := args[0]
	interval, _ := cmd.Flags().GetDuration("interval")
	count, _ := cmd.Flags().GetInt("count")
	asJSON, _ := cmd.Flags().GetBool("json")
	if interval <= 0 {
		return usagef("--interval must be positive")
	}
	if count < 0 {
		return usagef("--count must not be negative")
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
	out := cmd.OutOrStdout()
	enc := json.NewEncoder(out)
	if !asJSON {
		heads := make([]string, len(watchColumns))
		for i, c := range watchColumns {
			heads[i] = c.head
		}
		fmt.Fprintln(out, watchRow(heads...))
	}
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
		rate := func(a, b uint64) float64 { return float64(a-b) / secs }
		w := watchSample{Time: now, Seconds: secs,
			WriteMsgsPerSec: rate(cur.Writers.Messages, prev.Writers.Messages), WriteBytesPerSec: rate(cur.Writers.Bytes, prev.Writers.Bytes),
			ReadMsgsPerSec: rate(cur.Readers.Messages, prev.Readers.Messages), ReadBytesPerSec: rate(cur.Readers.Bytes, prev.Readers.Bytes),
			FillPercent: fill, ReadersAsleep: cur.ReadersAsleep, WritersAsleep: cur.WritersAsleep, DeadSleepers: cur.DeadSleepers,
			WriterState: cur.WriterState, Writers: cur.Writers, Readers: cur.Readers}
		if err := printWatch(out, enc, asJSON, w); err != nil {
			return err
		}
		prev, prevAt = cur, now
	}
	return nil
}

func printWatch(out io.Writer, enc *json.Encoder, asJSON bool, w watchSample) error {
	if asJSON {
		return enc.Encode(w) // one compact object and a newline
	}
	_, err := fmt.Fprintln(out, watchRow(w.Time.Format("15:04:05"),
		formatRate(w.WriteMsgsPerSec), formatRate(w.WriteBytesPerSec),
		formatRate(w.ReadMsgsPerSec), formatRate(w.ReadBytesPerSec),
		fmt.Sprintf("%.1f%%", w.FillPercent), fmt.Sprintf("%d/%d", w.ReadersAsleep, w.WritersAsleep), w.WriterState))
	return err
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
