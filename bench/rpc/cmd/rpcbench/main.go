//go:build linux

// Command rpcbench runs shmbench's rpc scenario over shmq, a Unix socket and gRPC on a
// Unix socket in the same run: calls per second, round-trip p50/p99 and CPU per call of
// echo calls, the server and the callers each in a process of their own (this binary
// re-executed), 1 and 8 callers. It lives in the bench/rpc module so that the core module
// never depends on gRPC; the runner is the core's internal/rpcbench, shared with
// shmbench.
//
//	cd bench/rpc && go run ./cmd/rpcbench [--duration 2s] [--runs 3] [--json FILE]
//
// --runs repeats every case, interleaved (each run measures every transport before the
// next run starts), so that a change in the machine's load shows as a spread, not as a
// difference between transports. The summary compares shmq with gRPC within each run.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shmq/shmq/bench/rpc"
	"github.com/shmq/shmq/internal/rpcbench"
)

func transports() []rpcbench.Transport { return append(rpcbench.Builtin(), rpc.GRPC()) }

func main() {
	if rpcbench.ChildMain(transports()...) {
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Run is one run's results in case order.
type Run []rpcbench.Result

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rpcbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	trs := fs.String("transports", "shmq,unix,grpc", "transports: shmq, unix, grpc")
	waits := fs.String("waits", "adaptive", "shmq: the rings' wait strategies (ring.ParseWait), e.g. adaptive,futex,spin")
	callers := fs.String("callers", "1,8", "callers calling at once")
	workers := fs.Int("workers", 0, "shmq: the server's handler goroutines (0: 1 for one caller, 4 for more)")
	size := fs.Int("size", 64, "request and reply bytes (at least 16)")
	duration := fs.Duration("duration", 2*time.Second, "measured time per case")
	runs := fs.Int("runs", 1, "repeat every case, interleaved")
	jsonOut := fs.String("json", "", "write every result as JSON to FILE (- for stdout)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var counts []int
	for _, f := range strings.Split(*callers, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "rpcbench: --callers: %q\n", f)
			return 2
		}
		counts = append(counts, n)
	}
	known := map[string]bool{}
	for _, t := range transports() {
		known[t.Name] = true
	}
	var cases []rpcbench.Case
	for _, tr := range strings.Split(*trs, ",") {
		if !known[tr] {
			fmt.Fprintf(stderr, "rpcbench: unknown transport %q\n", tr)
			return 2
		}
		ws := []string{""}
		if tr == "shmq" {
			ws = strings.Split(*waits, ",")
		}
		for _, w := range ws {
			for _, n := range counts {
				cases = append(cases, rpcbench.Case{Transport: tr, Wait: w, Callers: n, Workers: *workers, Size: *size, Duration: *duration})
			}
		}
	}
	var all []Run
	failed := false
	for r := range max(*runs, 1) {
		var this Run
		for i, cs := range cases {
			fmt.Fprintf(stderr, "\r\033[K[run %d, %d/%d] %s", r+1, i+1, len(cases), label(cs))
			res, err := rpcbench.Run(cs)
			if err != nil {
				fmt.Fprintf(stderr, "\r\033[Krpcbench: %s: %v\n", label(cs), err)
				failed = true
				continue
			}
			this = append(this, res)
		}
		all = append(all, this)
	}
	fmt.Fprint(stderr, "\r\033[K")
	printTable(stdout, all)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(all, "", "  ")
		b = append(b, '\n')
		var err error
		if *jsonOut == "-" {
			_, err = stdout.Write(b)
		} else {
			err = os.WriteFile(*jsonOut, b, 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "rpcbench: %v\n", err)
			return 1
		}
	}
	if failed {
		return 1
	}
	return 0
}

func label(cs rpcbench.Case) string {
	name := cs.Transport
	if cs.Wait != "" {
		name += "/" + cs.Wait
	}
	return fmt.Sprintf("%s x%d", name, cs.Callers)
}

func fmtNs(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d >= time.Microsecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	}
	return fmt.Sprintf("%dns", ns)
}

// printTable prints every result, then per run how shmq compares with gRPC and with the
// Unix socket for the same callers.
func printTable(w io.Writer, runs []Run) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "RUN\tTRANSPORT\tCALLERS\tSIZE\tCALLS/S\tP50\tP90\tP99\tMAX\tCPU/CALL\t")
	for i, run := range runs {
		for _, r := range run {
			name := r.Transport
			if r.Wait != "" {
				name += "/" + r.Wait
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", i+1, name, r.Callers, r.Size, r.CallsPerSec,
				fmtNs(r.P50), fmtNs(r.P90), fmtNs(r.P99), fmtNs(r.Max), fmtNs(int64(r.CPUPerCall())))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	for i, run := range runs {
		for _, r := range run {
			if r.Transport != "shmq" {
				continue
			}
			for _, other := range run {
				if other.Transport == "shmq" || other.Callers != r.Callers || other.P50 <= 0 || other.CallsPerSec <= 0 {
					continue
				}
				fmt.Fprintf(w, "run %d, %d caller(s): shmq/%s vs %s: %.1fx lower p50, %.1fx the calls/s\n", i+1, r.Callers, r.Wait,
					other.Transport, float64(other.P50)/float64(r.P50), r.CallsPerSec/other.CallsPerSec)
			}
		}
	}
}
