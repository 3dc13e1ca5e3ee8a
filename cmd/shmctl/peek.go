package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newPeekCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peek NAME [-n N] [--preview BYTES] [--from SEQ] [--json]",
		Short: "Show the next records without consuming them",
		Long: "Show the next records of a ring (position, type, length and a preview, as text\n" +
			"when it is printable and hex otherwise) without consuming them. A topic shows the\n" +
			"records it holds from the oldest (or --from) on, copies validated against\n" +
			"publishers overwriting them. Read-only.",
		Args: exactArgs(1, "a segment NAME"),
		RunE: runPeek,
	}
	cmd.Flags().IntP("n", "n", 10, "how many records")
	cmd.Flags().Int("preview", 32, "payload bytes to show per record")
	cmd.Flags().Uint64("from", 0, "topics: first sequence to show (default: the oldest the ring holds)")
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

func runPeek(cmd *cobra.Command, args []string) error {
	name := args[0]
	n, _ := cmd.Flags().GetInt("n")
	preview, _ := cmd.Flags().GetInt("preview")
	if n < 0 || preview < 0 {
		return usagef("-n and --preview must not be negative")
	}
	s, err := shm.Inspect(name, options(cmd))
	if err != nil {
		return segmentError("peek", name, err)
	}
	defer s.Close()
	var recs []ring.PeekedRecord
	if s.Descriptor().Kind == ring.Topic {
		recs, err = peekTopic(cmd, s, n, preview)
	} else if cmd.Flags().Changed("from") {
		return usagef("--from applies to topics only")
	} else {
		recs, err = ring.Peek(s, n, preview)
	}
	if err != nil {
		return segmentError("peek", name, err)
	}
	if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
		if recs == nil {
			recs = []ring.PeekedRecord{}
		}
		return writeJSON(cmd.OutOrStdout(), recs)
	}
	if len(recs) == 0 {
		fmt.Fprintln(cmd.OutOrStdout(), "(no records)")
		return nil
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POSITION\tTYPE\tLENGTH\tPREVIEW")
	for _, r := range recs {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\n", r.Position, r.Type, r.Length, previewOf(r.Data, r.Length))
	}
	return tw.Flush()
}

// previewOf shows printable UTF-8 as a quoted string and anything else as hex.
func previewOf(b []byte, length int) string {
	more := ""
	if len(b) < length {
		more = "…"
	}
	printable := utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return r < ' ' || r == 0x7f })
	if printable {
		return strconv.Quote(string(b)) + more
	}
	return fmt.Sprintf("% x", b) + more
}

// peekTopic copies up to n records of a topic, from --from or else the oldest it holds.
func peekTopic(cmd *cobra.Command, s *shm.Segment, n, preview int) ([]ring.PeekedRecord, error) {
	from, _ := cmd.Flags().GetUint64("from")
	if !cmd.Flags().Changed("from") {
		st, err := ring.ReadTopicStats(s)
		if err != nil {
			return nil, err
		}
		from = st.Oldest
	}
	return ring.PeekTopic(s, from, n, preview)
}
