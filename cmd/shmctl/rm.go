package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/shm"
)

func newRmCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rm NAME... [--force]",
		Short: "Remove segments",
		Long: "Remove segments. A segment with a live peer attached, or a file that is not a\n" +
			"valid shmq segment, is refused unless --force. Processes that have a removed\n" +
			"segment mapped keep using it until they close it.",
		ValidArgsFunction: completeSegments,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("rm needs at least one segment NAME")
			}
			return nil
		},
		RunE: runRm,
	}
	cmd.Flags().Bool("force", false, "remove even with live peers, or a file that is not a valid segment")
	return cmd
}

func runRm(cmd *cobra.Command, args []string) error {
	opts := options(cmd)
	force, _ := cmd.Flags().GetBool("force")
	var failed []error
	for _, name := range args {
		if err := removeOne(opts, name, force); err != nil {
			failed = append(failed, err)
			continue
		}
		fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", name)
	}
	if len(failed) == 0 {
		return nil
	}
	// Every failure but the last goes to stderr here; run prints the last one.
	for _, err := range failed[:len(failed)-1] {
		fmt.Fprintf(cmd.ErrOrStderr(), "shmctl: %s\n", err)
	}
	return failed[len(failed)-1]
}

func removeOne(opts shm.Options, name string, force bool) error {
	if err := shm.ValidateName(name); err != nil {
		return segmentError("rm", name, err)
	}
	if !force {
		s, err := shm.Inspect(name, opts)
		if errors.Is(err, shm.ErrNotExist) {
			return segmentError("rm", name, err)
		}
		if err != nil {
			return segmentError("rm", name, fmt.Errorf("%w (not removed; --force removes it anyway)", unwrapPath(err)))
		}
		live, err := s.LivePeers()
		s.Close()
		if err != nil {
			return segmentError("rm", name, err)
		}
		if live > 0 {
			return segmentError("rm", name, fmt.Errorf("%d live peer(s) attached (not removed; --force removes it anyway)", live))
		}
	}
	if err := shm.Remove(name, opts); err != nil {
		return segmentError("rm", name, err)
	}
	return nil
}

func unwrapPath(err error) error {
	return errors.Unwrap(segmentError("", "", err))
}
