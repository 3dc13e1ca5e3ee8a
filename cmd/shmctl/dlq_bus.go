package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shmq/shmq/bus"
	"github.com/shmq/shmq/shm"
)

// busOfDLQ reports whether the DLQ name is an event bus's, NAME.dlq beside a registry of
// kind bus, and the bus's name.
func busOfDLQ(name string, opts shm.Options) (string, bool) {
	busName, ok := strings.CutSuffix(name, ".dlq")
	if !ok || busName == "" {
		return "", false
	}
	opts.Kind = bus.Kind
	seg, err := shm.Inspect(busName+".bus", opts)
	if err != nil {
		return "", false
	}
	seg.Close()
	return busName, true
}

// replayBusDLQ replays the dead letters of the bus busName into the queues of the
// subscriptions that failed them (bus.ReplayDeadLetters: attempt 1 again, the queue's
// byte count kept), instead of the plain ring writes of a DLQ that is not a bus's.
func replayBusDLQ(cmd *cobra.Command, busName, name string) error {
	wait, _ := cmd.Flags().GetDuration("timeout")
	if wait <= 0 {
		return usagef("--timeout must be positive")
	}
	n, err := bus.ReplayDeadLetters(context.Background(), busName, options(cmd), bus.ReplayOptions{Wait: wait})
	fmt.Fprintf(cmd.OutOrStdout(), "replayed %d entries from %s to the queues of bus %s\n", n, name, busName)
	if err != nil {
		return fmt.Errorf("dlq replay %s: %w", name, err)
	}
	return nil
}
