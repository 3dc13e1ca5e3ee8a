package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newTailCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tail NAME [--oldest] [--type T,...] [--json] [--peek] [--count N]",
		Short: "Follow the records passing through a ring or topic",
		Long: "Print the records written to a ring or published to a topic as they come, until\n" +
			"interrupted (or --count records), without taking them from anyone:\n" +
			"\n" +
			"  topic        tail subscribes, anonymously: every record published from now on (from\n" +
			"               the oldest held with --oldest), woken by the publishers, never polling.\n" +
			"               Other subscribers are not affected. Under the block policy publishers\n" +
			"               wait for tail like for any subscriber if it falls a ring behind (a\n" +
			"               paused terminal, say); --peek follows by looking only, as for rings.\n" +
			"  spsc, mpmc   tail looks, read-only, every --interval: the records written since it\n" +
			"               last looked (with --oldest, first those not yet consumed). Records the\n" +
			"               readers consume between two looks are not seen; tail says where.\n" +
			"\n" +
			"Each record is printed as by peek (position, type, length, hexdump -C of the first\n" +
			"--preview bytes); --json prints one object per line: {position, type, length,\n" +
			"data (base64)}, and {gap: {from, to}} for positions not seen. --type keeps the\n" +
			"records of these type ids only.",
		Args:              exactArgs(1, "a segment NAME"),
		ValidArgsFunction: completeSegment,
		RunE:              runTail,
	}
	cmd.Flags().Bool("oldest", false, "begin with what the ring holds: a topic's oldest record, a ring's unconsumed ones")
	cmd.Flags().UintSlice("type", nil, "show only records of these type ids (repeat or comma-separate)")
	cmd.Flags().Bool("json", false, "print one JSON object per record and line")
	cmd.Flags().Bool("peek", false, "topics: follow by looking only, without subscribing")
	cmd.Flags().Int("count", 0, "stop after this many records (0: until interrupted)")
	cmd.Flags().Int("preview", 64, "payload bytes to show per record")
	cmd.Flags().Duration("interval", 50*time.Millisecond, "rings and --peek: time between looks")
	return cmd
}

// tailer prints what tail follows.
type tailer struct {
	out     io.Writer
	enc     *json.Encoder
	asJSON  bool
	types   []uint32 // nil: every type
	count   int      // records to print; 0: no limit
	printed int
	preview int
}

// tailGap is the JSON line for positions tail did not see.
type tailGap struct {
	Gap struct {
		From uint64 `json:"from"`
		To   uint64 `json:"to"`
	} `json:"gap"`
}

// started prints the table's header, once tail knows where it starts: a record written
// after the header appeared is one tail shows.
func (t *tailer) started() {
	if !t.asJSON {
		fmt.Fprintf(t.out, "%12s  %6s  %6s  %s\n", "POSITION", "TYPE", "LENGTH", "DATA")
	}
}

// record prints r unless --type filters it out, and reports whether tail is done.
func (t *tailer) record(r ring.PeekedRecord) (done bool, err error) {
	if t.types != nil && !slices.Contains(t.types, r.Type) {
		return false, nil
	}
	if len(r.Data) > t.preview {
		r.Data = r.Data[:t.preview]
	}
	if t.asJSON {
		err = t.enc.Encode(r)
	} else {
		lines := hexdump(r.Data, r.Length)
		_, err = fmt.Fprintf(t.out, "%12d  %6d  %6d  %s\n", r.Position, r.Type, r.Length, lines[0])
		for _, l := range lines[1:] {
			if err == nil {
				_, err = fmt.Fprintf(t.out, "%32s%s\n", "", l)
			}
		}
	}
	t.printed++
	return t.count > 0 && t.printed >= t.count, err
}

// gap says that positions from up to to went by unseen.
func (t *tailer) gap(from, to uint64, why string) error {
	if t.asJSON {
		var g tailGap
		g.Gap.From, g.Gap.To = from, to
		return t.enc.Encode(g)
	}
	_, err := fmt.Fprintf(t.out, "-- positions %d to %d not seen: %s\n", from, to, why)
	return err
}

func runTail(cmd *cobra.Command, args []string) error {
	name := args[0]
	f := cmd.Flags()
	count, _ := f.GetInt("count")
	preview, _ := f.GetInt("preview")
	interval, _ := f.GetDuration("interval")
	oldest, _ := f.GetBool("oldest")
	peekOnly, _ := f.GetBool("peek")
	types, _ := f.GetUintSlice("type")
	if count < 0 || preview < 0 {
		return usagef("--count and --preview must not be negative")
	}
	if interval <= 0 {
		return usagef("--interval must be positive")
	}
	t := &tailer{out: cmd.OutOrStdout(), count: count, preview: preview}
	t.asJSON, _ = f.GetBool("json")
	t.enc = json.NewEncoder(t.out)
	for _, ty := range types {
		if uint64(ty) > 1<<32-1 {
			return usagef("--type %d is not a 32-bit type id", ty)
		}
		t.types = append(t.types, uint32(ty))
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	s, err := shm.Inspect(name, options(cmd))
	if err != nil {
		return segmentError("tail", name, err)
	}
	defer s.Close()
	kind := s.Descriptor().Kind
	switch {
	case kind == ring.Topic && !peekOnly:
		err = tailSubscribe(ctx, cmd, name, t, oldest)
	case kind == ring.Topic:
		err = tailPeekTopic(ctx, s, t, oldest, interval)
	case peekOnly:
		return usagef("--peek applies to topics only: tail only looks at other rings anyway")
	default:
		err = tailPeekRing(ctx, s, t, oldest, interval)
	}
	if err != nil && ctx.Err() == nil {
		return segmentError("tail", name, err)
	}
	return nil
}

// tailSubscribe follows a topic as an anonymous subscriber of its own.
func tailSubscribe(ctx context.Context, cmd *cobra.Command, name string, t *tailer, oldest bool) error {
	seg, err := shm.Open(name, options(cmd))
	if err != nil {
		return err
	}
	defer seg.Close()
	start := ring.FromLatest
	if oldest {
		start = ring.FromOldest
	}
	sub, err := ring.Subscribe(ctx, seg, ring.SubscribeOptions{Start: start, Wait: ring.Futex()})
	if err != nil {
		return err
	}
	defer sub.Close()
	spec, err := ring.SpecOf(seg.Descriptor())
	if err != nil {
		return err
	}
	t.started()
	buf := make([]byte, spec.SlotSize) // no record is larger than a slot
	for {
		before := sub.Position()
		n, typ, err := sub.Read(ctx, buf)
		var lag *ring.LagError
		switch {
		case errors.As(err, &lag):
			if err := t.gap(before, sub.Position(), fmt.Sprintf("%d overwritten before tail read them", lag.Missed)); err != nil {
				return err
			}
			continue
		case err != nil:
			return err
		}
		pos := sub.Position() - 1
		done, err := t.record(ring.PeekedRecord{Position: pos, Type: typ, Length: n, Data: buf[:n], Next: pos + 1})
		if done || err != nil {
			return err
		}
	}
}

// tailPeekTopic follows a topic by sequence with PeekTopic, every interval.
func tailPeekTopic(ctx context.Context, s *shm.Segment, t *tailer, oldest bool, interval time.Duration) error {
	st, err := ring.ReadTopicStats(s)
	if err != nil {
		return err
	}
	from := st.Published
	if oldest {
		from = st.Oldest
	}
	t.started()
	return poll(ctx, interval, func() (bool, error) {
		recs, err := ring.PeekTopic(s, from, 1024, t.preview)
		if err != nil {
			return false, err
		}
		for _, r := range recs {
			if r.Position > from {
				if err := t.gap(from, r.Position, "overwritten before tail looked"); err != nil {
					return false, err
				}
			}
			from = r.Next
			if done, err := t.record(r); done || err != nil {
				return done, err
			}
		}
		return false, nil
	})
}

// tailPeekRing follows an SPSC or MPMC ring with PeekFrom, every interval.
func tailPeekRing(ctx context.Context, s *shm.Segment, t *tailer, oldest bool, interval time.Duration) error {
	st, err := ring.ReadStats(s)
	if err != nil {
		return err
	}
	from := st.WritePos
	if oldest {
		from = st.ReadPos
	}
	t.started()
	unit := "bytes"
	if s.Descriptor().Kind == ring.MPMC {
		unit = "slots"
	}
	return poll(ctx, interval, func() (bool, error) {
		recs, skipped, err := ring.PeekFrom(s, from, 1024, t.preview)
		if err != nil {
			return false, err
		}
		if skipped > 0 {
			if err := t.gap(from, from+skipped, fmt.Sprintf("%d %s consumed before tail looked", skipped, unit)); err != nil {
				return false, err
			}
			from += skipped
		}
		for _, r := range recs {
			from = r.Next
			if done, err := t.record(r); done || err != nil {
				return done, err
			}
		}
		return false, nil
	})
}

// poll calls look at once and then every interval until it reports done or fails, or ctx
// ends.
func poll(ctx context.Context, interval time.Duration, look func() (bool, error)) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if done, err := look(); done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}
