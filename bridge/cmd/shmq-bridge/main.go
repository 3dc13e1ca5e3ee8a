// Command shmq-bridge forwards shmq topics to NATS subjects and back (package bridge), so
// that processes on several machines share topics.
//
//	shmq-bridge --name host-a --url nats://nats:4222 --out orders,reliable --in orders,reliable
//	shmq-bridge --name host-a --url nats://nats:4222 --out ticks=market.ticks
//
// Each --out and --in is TOPIC[=SUBJECT][,reliable]; the subject defaults to shmq.TOPIC.
// Each --bus is BUS[=SUBJECT][,reliable][,out|,in] and forwards an event bus (both ways
// unless out or in is given); the subject defaults to shmq.bus.BUS.
// It runs until SIGINT or SIGTERM and prints each route's counters every --stats interval
// and when it stops. It is a command of its own, not a shmctl subcommand, so that the NATS
// client and server stay out of the core module's dependencies.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/shmq/shmq/bridge"
)

// routes is a repeatable TOPIC[=SUBJECT][,reliable] flag.
type routes []bridge.Route

func (r *routes) String() string { return fmt.Sprint(*r) }

func (r *routes) Set(s string) error {
	spec, opt, hasOpt := strings.Cut(s, ",")
	if hasOpt && opt != "reliable" {
		return fmt.Errorf("route %q: the only option is ,reliable", s)
	}
	topicName, subject, _ := strings.Cut(spec, "=")
	*r = append(*r, bridge.Route{Topic: topicName, Subject: subject, Reliable: hasOpt})
	return nil
}

// buses is a repeatable BUS[=SUBJECT][,reliable][,out|,in] flag.
type buses []bridge.BusRoute

func (b *buses) String() string { return fmt.Sprint(*b) }

func (b *buses) Set(s string) error {
	parts := strings.Split(s, ",")
	name, subject, _ := strings.Cut(parts[0], "=")
	r := bridge.BusRoute{Bus: name, Subject: subject}
	for _, o := range parts[1:] {
		switch o {
		case "reliable":
			r.Reliable = true
		case "out":
			r.Out = true
		case "in":
			r.In = true
		default:
			return fmt.Errorf("bus route %q: options are reliable, out, in", s)
		}
	}
	if !r.Out && !r.In {
		r.Out, r.In = true, true
	}
	*b = append(*b, r)
	return nil
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "shmq-bridge:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("shmq-bridge", flag.ContinueOnError)
	var cfg bridge.Config
	var in, outRoutes routes
	var busRoutes buses
	fs.StringVar(&cfg.Name, "name", "", "this bridge's name (durable subscriptions and consumers are named after it)")
	fs.StringVar(&cfg.URL, "url", "nats://127.0.0.1:4222", "NATS server URL")
	fs.StringVar(&cfg.Dir, "dir", "", "directory of the local topics (default $SHMQ_DIR or /dev/shm)")
	fs.StringVar(&cfg.Stream, "stream", "", "JetStream stream for reliable routes (default SHMQ)")
	fs.Var(&outRoutes, "out", "forward a local topic to NATS: TOPIC[=SUBJECT][,reliable] (repeatable)")
	fs.Var(&in, "in", "forward a NATS subject into a local topic: TOPIC[=SUBJECT][,reliable] (repeatable)")
	fs.Var(&busRoutes, "bus", "forward an event bus: BUS[=SUBJECT][,reliable][,out|,in] (repeatable)")
	every := fs.Duration("stats", 10*time.Second, "print counters this often (0: only when stopping)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.Out, cfg.In, cfg.Buses = outRoutes, in, busRoutes
	b, err := bridge.New(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *every > 0 {
		go func() {
			t := time.NewTicker(*every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					printStats(out, b.Stats())
				}
			}
		}()
	}
	err = b.Run(ctx)
	printStats(out, b.Stats())
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func printStats(w io.Writer, st map[string]bridge.Stats) {
	keys := make([]string, 0, len(st))
	for k := range st {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		s := st[k]
		fmt.Fprintf(w, "%-40s forwarded %d received %d dropped %d retried %d duplicates %d looped %d\n",
			k, s.Forwarded, s.Received, s.Dropped, s.Retried, s.Duplicates, s.Looped)
	}
}
