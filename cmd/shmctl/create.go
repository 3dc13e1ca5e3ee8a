package main

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/internal/units"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newCreateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create NAME --kind spsc|mpmc|topic --size SIZE [--slot SIZE] [--policy block|overwrite|latest] [--mode 0600]",
		Short: "Create a segment",
		Long: "Create a segment atomically. Sizes take binary units (64KiB, 1MiB, 1GiB); a size\n" +
			"that is not a power of two is rounded up, and shmctl says so. A topic (publish-\n" +
			"subscribe) has fixed slots like an mpmc ring and an overflow policy: block (publishers\n" +
			"wait for the slowest subscriber, the default), overwrite or latest.",
		Args: exactArgs(1, "a segment NAME"),
		RunE: runCreate,
	}
	cmd.Flags().String("kind", "", "ring kind: spsc, mpmc or topic (required)")
	cmd.Flags().String("size", "", "data region size, e.g. 1MiB (required)")
	cmd.Flags().String("slot", "", "slot size of an mpmc ring or a topic (default 256B)")
	cmd.Flags().String("policy", "", "overflow policy of a topic: block, overwrite or latest (default block)")
	cmd.Flags().String("mode", "0600", "file permissions, octal")
	return cmd
}

func runCreate(cmd *cobra.Command, args []string) error {
	name := args[0]
	kindFlag, _ := cmd.Flags().GetString("kind")
	sizeFlag, _ := cmd.Flags().GetString("size")
	slotFlag, _ := cmd.Flags().GetString("slot")
	modeFlag, _ := cmd.Flags().GetString("mode")
	policyFlag, _ := cmd.Flags().GetString("policy")
	if kindFlag == "" || sizeFlag == "" {
		return usagef("create needs --kind and --size")
	}
	kind, err := shm.ParseKind(kindFlag)
	if err != nil {
		return usagef("--kind %q: want spsc, mpmc or topic", kindFlag)
	}
	size, err := roundedSize(cmd, name, "size", sizeFlag)
	if err != nil {
		return err
	}
	spec := ring.Spec{Kind: kind, Size: size}
	switch {
	case kind == ring.MPMC || kind == ring.Topic:
		if slotFlag == "" {
			slotFlag = "256"
		}
		slot, err := roundedSize(cmd, name, "slot", slotFlag)
		if err != nil {
			return err
		}
		if slot > 1<<31 {
			return usagef("--slot %s is too large", slotFlag)
		}
		spec.SlotSize = uint32(slot)
	case slotFlag != "":
		return usagef("--slot applies to mpmc rings and topics only")
	}
	switch {
	case kind == ring.Topic:
		if policyFlag == "" {
			policyFlag = ring.Block.String()
		}
		p, err := ring.ParsePolicy(policyFlag)
		if err != nil {
			return usagef("--policy %q: want block, overwrite or latest", policyFlag)
		}
		spec.Policy = p
	case policyFlag != "":
		return usagef("--policy applies to topics only")
	}
	mode, err := strconv.ParseUint(modeFlag, 8, 32)
	if err != nil || mode == 0 || mode > 0o777 {
		return usagef("--mode %q: want octal permissions such as 0600", modeFlag)
	}
	opts := options(cmd)
	opts.Mode = fs.FileMode(mode)
	s, err := ring.Create(name, spec, opts)
	if err != nil {
		return segmentError("create", name, err)
	}
	defer s.Close()
	d := s.Descriptor()
	detail := units.FormatSize(d.DataSize) + " data"
	if spec.SlotSize != 0 {
		detail += fmt.Sprintf(", %d slots of %s", d.DataSize/uint64(spec.SlotSize), units.FormatSize(uint64(spec.SlotSize)))
	}
	if spec.Kind == ring.Topic {
		detail += ", policy " + spec.Policy.String()
	}
	fmt.Fprintf(cmd.OutOrStdout(), "created %s (%v, %s) at %s\n", name, d.Kind, detail, filepath.Join(s.Dir(), name))
	return nil
}

// roundedSize parses a size flag and rounds it up to a power of two, telling the user on
// stderr when it did.
func roundedSize(cmd *cobra.Command, name, flag, value string) (uint64, error) {
	n, err := units.ParseSize(value)
	if err != nil {
		return 0, usagef("--%s: %v", flag, err)
	}
	r := shm.NextPow2(n)
	if r == 0 {
		return 0, usagef("--%s %s is too large", flag, value)
	}
	if r != n {
		fmt.Fprintf(cmd.ErrOrStderr(), "shmctl: create %s: %s %s is not a power of two, rounded up to %s\n",
			name, flag, value, units.FormatSize(r))
	}
	return r, nil
}
