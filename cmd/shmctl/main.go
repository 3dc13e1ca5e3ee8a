// Command shmctl creates, lists, inspects, follows and removes shmq segments, and serves
// their counters to Prometheus (serve-metrics).
//
// Exit status: 0 on success, 1 on failure (one line on stderr naming the segment and the
// cause), 2 on a usage error. Every subcommand takes --dir (default $SHMQ_DIR, then
// /dev/shm) and --help; flags may follow positional arguments.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/shm"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// usageError marks a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// run executes one shmctl command line and returns its exit status. It is main without the
// process: tests call it directly.
func run(args []string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdout, stderr)
}

// runContext is run for commands that go on until interrupted (watch, tail, serve-metrics):
// they also end, successfully, when ctx does.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) (status int) {
	// A segment another process truncates while shmctl reads it faults (SIGBUS): with
	// panic-on-fault that is a panic on this goroutine, reported below, not a crash.
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		// Nothing in a segment file should reach a panic; if a bug lets one through, the
		// user still gets one line and a failure status, not a stack trace.
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); fault {
				fmt.Fprintf(stderr, "shmctl: a segment shrank while it was read (%v): %v\n", shm.ErrTruncated, r)
			} else {
				fmt.Fprintf(stderr, "shmctl: internal error: %v\n", r)
			}
			status = 1
		}
	}()
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "shmctl: %s\nRun 'shmctl --help' for usage.\n", ue.msg)
		return 2
	default:
		fmt.Fprintf(stderr, "shmctl: %s\n", err)
		return 1
	}
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "shmctl",
		Short: "Manage shmq shared-memory segments",
		Long: "shmctl creates, lists, inspects, follows and removes shmq segments, and serves\n" +
			"their counters to Prometheus.\n\n" +
			"Segments live in --dir, else $SHMQ_DIR, else /dev/shm. Looking (ls, stat, watch,\n" +
			"peek, tail, serve-metrics) never changes a segment (tail on a topic subscribes).\n" +
			"Exit status: 0 ok, 1 failure, 2 usage.",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			_ = cmd.Help()
			return usagef("a command is required")
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().String("dir", "", "segment directory (default $SHMQ_DIR, then /dev/shm)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err.Error()} })
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newCreateCommand(), newLsCommand(), newStatCommand(), newWatchCommand(), newPeekCommand(), newTailCommand(), newRmCommand(), newGCCommand(), newHealthCommand())
	root.AddCommand(newDLQCommand(), newServeMetricsCommand(), newCompletionCommand())
	return root
}

// options returns the segment options selected by the command's flags.
func options(cmd *cobra.Command) shm.Options {
	dir, _ := cmd.Flags().GetString("dir")
	return shm.Options{Dir: dir}
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s needs %s", cmd.Name(), what)
		}
		return nil
	}
}

// segmentError says which command failed on which segment and why, in one line:
// "stat orders: segment is corrupt: checksum mismatch".
func segmentError(op, name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}

// stateOf names the condition of a segment file for ls and gc, from the error Inspect gave.
func stateOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, shm.ErrNotSegment):
		return "foreign"
	case errors.Is(err, shm.ErrUnsafe):
		return "unsafe"
	case errors.Is(err, shm.ErrCorrupt):
		return "corrupt"
	case errors.Is(err, shm.ErrTruncated):
		return "truncated"
	case errors.Is(err, shm.ErrVersion):
		return "version"
	case errors.Is(err, shm.ErrKind):
		return "unknown_kind"
	case errors.Is(err, shm.ErrNotExist):
		return "gone"
	}
	return "error"
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
