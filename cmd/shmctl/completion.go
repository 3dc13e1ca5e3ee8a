package main

import (
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/internal/segfile"
	"github.com/shmq/shmq/shm"
)

func newCompletionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: "Print the completion script of shmctl for a shell: subcommands, flags, and the\n" +
			"segments of the directory for commands that take a NAME. To load it:\n" +
			"\n" +
			"  bash   source <(shmctl completion bash)\n" +
			"         (or save it in /etc/bash_completion.d/shmctl)\n" +
			"  zsh    shmctl completion zsh > \"${fpath[1]}/_shmctl\"\n" +
			"  fish   shmctl completion fish > ~/.config/fish/completions/shmctl.fish",
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("completion needs a shell: bash, zsh or fish")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			}
			return usagef("completion: unknown shell %q (bash, zsh or fish)", args[0])
		},
	}
}

// completeSegment completes a command's first argument with the shmq segments of the
// directory (--dir, else $SHMQ_DIR, else /dev/shm); completeSegments every argument.
func completeSegment(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return completeSegments(cmd, args, toComplete)
}

func completeSegments(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	opts := options(cmd)
	names, err := shm.List(opts)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, n := range names {
		if !slices.Contains(args, n) && segfile.HasMagic(filepath.Join(opts.ResolvedDir(), n)) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
