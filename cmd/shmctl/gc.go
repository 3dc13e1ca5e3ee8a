package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/shm"
)

func newGCCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gc [--dry-run]",
		Short: "Remove what crashed processes left behind",
		Long: "Remove segments that have dead peers and no live one, and temporaries of a\n" +
			"creation whose process died. Segments whose peers detached cleanly, foreign\n" +
			"files and damaged segments are left alone.",
		Args: exactArgs(0, "no arguments"),
		RunE: runGC,
	}
	cmd.Flags().Bool("dry-run", false, "only print what would be removed")
	return cmd
}

func runGC(cmd *cobra.Command, args []string) error {
	opts := options(cmd)
	dry, _ := cmd.Flags().GetBool("dry-run")
	removed, err := shm.GC(opts, dry)
	verb := "removed"
	if dry {
		verb = "would remove"
	}
	for _, c := range removed {
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%s)\n", verb, c.Name, c.Reason)
	}
	if err != nil {
		return fmt.Errorf("gc %s: %w", opts.ResolvedDir(), err)
	}
	return nil
}
