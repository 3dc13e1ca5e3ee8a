package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newPeekCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peek NAME [-n N] [--preview BYTES] [--from SEQ] [--json]",
		Short: "Show the next records without consuming them",
		Long: "Show the next records of a ring without consuming them: position, type, length\n" +
			"and the first --preview bytes as hexdump -C shows them (offset, 16 bytes in hex,\n" +
			"the printable ones as text between bars, '.' for the others). A topic shows the\n" +
			"records it holds from the oldest (or --from) on, copies validated against\n" +
			"publishers overwriting them. Read-only.",
		Args:              exactArgs(1, "a segment NAME"),
		ValidArgsFunction: completeSegment,
		RunE:              runPeek,
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
	fmt.Fprintln(tw, "POSITION\tTYPE\tLENGTH\tDATA")
	for _, r := range recs {
		printRecord(tw, r)
	}
	return tw.Flush()
}

// printRecord writes one record as table rows: position, type, length and the first line
// of its hex dump, then the dump's further lines under the first.
func printRecord(w io.Writer, r ring.PeekedRecord) {
	lines := hexdump(r.Data, r.Length)
	fmt.Fprintf(w, "%d\t%d\t%d\t%s\n", r.Position, r.Type, r.Length, lines[0])
	for _, l := range lines[1:] {
		fmt.Fprintf(w, "\t\t\t%s\n", l)
	}
}

// hexdump formats b as hexdump -C does, 16 bytes a line: the offset, the bytes in hex in two
// groups of eight, and the printable ASCII ones between bars ('.' for the others). length
// is the record's full length: when b is only its start, the last line says how many bytes
// are not shown. An empty b is one empty line.
func hexdump(b []byte, length int) []string {
	if len(b) == 0 {
		if length > 0 {
			return []string{fmt.Sprintf("(+%d bytes)", length)}
		}
		return []string{""}
	}
	var lines []string
	for off := 0; off < len(b); off += 16 {
		chunk := b[off:min(off+16, len(b))]
		var sb strings.Builder
		fmt.Fprintf(&sb, "%04x  ", off)
		for i := range 16 {
			switch {
			case i < len(chunk):
				fmt.Fprintf(&sb, "%02x ", chunk[i])
			default:
				sb.WriteString("   ")
			}
			if i == 7 {
				sb.WriteByte(' ')
			}
		}
		sb.WriteString(" |")
		for _, c := range chunk {
			if c < ' ' || c > '~' {
				c = '.'
			}
			sb.WriteByte(c)
		}
		sb.WriteByte('|')
		lines = append(lines, sb.String())
	}
	if more := length - len(b); more > 0 {
		lines[len(lines)-1] += fmt.Sprintf(" (+%d bytes)", more)
	}
	return lines
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
