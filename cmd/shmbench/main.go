//go:build linux

// Command shmbench measures shmq's rings against the kernel's pipes, Unix sockets and TCP
// loopback, and against the floor (the simplest spinning shared-memory code, no shmq at
// all), with every writer and reader in a process of its own.
//
// For each transport, wait strategy and message size it runs up to four scenarios:
// throughput (writers flood), latency (one-way, at a fixed rate, CLOCK_MONOTONIC stamps),
// pingpong (half round trip) and idle (the CPU a waiting reader burns), and reports
// messages per second, latency percentiles and CPU per side. Every message carries a
// sequence number and a checksum; shmbench exits 1 if any was lost or corrupt.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shmq/shmq/internal/units"
	"github.com/shmq/shmq/ring"
)

func main() {
	if childMain() {
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

var (
	allTransports = []string{"floor", "spsc", "mpmc", "pipe", "unix", "tcp"}
	allWaits      = []string{"spin", "sleep", "futex", "adaptive"}
	allScenarios  = []string{"throughput", "latency", "pingpong", "idle"}
	// knownScenarios are those --scenarios accepts; rpc runs only when asked for.
	knownScenarios = append(allScenarios[:len(allScenarios):len(allScenarios)], rpcScenario)
)

// config is the parsed command line.
type config struct {
	Transports []string
	Waits      []string
	Sizes      []int
	Producers  int
	Consumers  int
	Scenarios  []string
	Duration   time.Duration
	Rate       int
	Batch      int
	Sleep      time.Duration
	Codec      string
	Pin        bool
	Quick      bool
	JSON       string
	Plot       string
	Policy     string // pubsub: block or overwrite
	Callers    []int  // rpc: callers at once
}

// errUsage marks a bad command line: exit status 2.
var errUsage = errors.New("usage")

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("shmbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	transports := fs.String("transports", strings.Join(allTransports, ","), "transports to measure: "+strings.Join(allTransports, ",")+
		"; also "+strings.Join(fanoutTransports, ",")+" (one publisher, --consumers subscribers) and "+loopTransport+" (one event loop over 1, 10 and 100 rings)")
	waits := fs.String("waits", strings.Join(allWaits, ","), "wait strategies of the rings: "+strings.Join(allWaits, ","))
	sizes := fs.String("sizes", "64", "message sizes, e.g. 64,4KiB,1MiB (at least 24 bytes)")
	producers := fs.Int("producers", 1, "writer processes (mpmc)")
	consumers := fs.Int("consumers", 1, "reader processes (mpmc), subscriber processes (pubsub, fanout-spsc)")
	policy := fs.String("policy", "block", "pubsub: the topic's policy, block or overwrite")
	scenarios := fs.String("scenarios", strings.Join(allScenarios, ","), "scenarios: "+strings.Join(allScenarios, ",")+
		"; also "+rpcScenario+" (request-response over shmq and a Unix socket: --transports spsc or shmq, unix)")
	callers := fs.String("callers", "1,8", "rpc: callers calling at once, e.g. 1,8")
	duration := fs.Duration("duration", time.Second, "time per case")
	rate := fs.Int("rate", 10000, "messages per second in the latency scenario")
	batch := fs.Int("batch", 1, "throughput: messages per commit/drain (rings), per write/read (kernel), per publish (floor)")
	sleep := fs.Duration("sleep", 10*time.Millisecond, "poll interval of the sleep wait strategy")
	codecFlag := fs.String("codec", "raw", "how ring messages are encoded: raw (bytes), fixed (a Go struct viewed in place), json")
	pinFlag := fs.Bool("pin", false, "pin the writer's and the reader's hot thread to different CPUs")
	quick := fs.Bool("quick", false, "short cases: the whole run in well under 20 s")
	jsonOut := fs.String("json", "", "write results as JSON to FILE (- for stdout)")
	plot := fs.String("plot", "", "write an SVG chart of throughput and latency to FILE")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: shmbench [flags]\n\nCompares shmq rings with pipes, Unix sockets and TCP, each side in its own process.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	cfg := config{Producers: *producers, Consumers: *consumers, Duration: *duration, Rate: *rate, Batch: *batch, Sleep: *sleep,
		Codec: *codecFlag, Pin: *pinFlag, Quick: *quick, JSON: *jsonOut, Plot: *plot}
	var err error
	if cfg.Policy, err = parseBenchPolicy(*policy); err != nil {
		return cfg, err
	}
	if cfg.Transports, err = pickList("transports", *transports, append(append(allTransports[:len(allTransports):len(allTransports)], fanoutTransports...), loopTransport, shmqTranport)); err != nil {
		return cfg, err
	}
	if cfg.Waits, err = pickList("waits", *waits, allWaits); err != nil {
		return cfg, err
	}
	if cfg.Scenarios, err = pickList("scenarios", *scenarios, knownScenarios); err != nil {
		return cfg, err
	}
	if cfg.Callers, err = parseCallers(*callers); err != nil {
		return cfg, err
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := units.ParseSize(s)
		if err != nil || n < msgHeader || n > 64<<20 {
			return cfg, fmt.Errorf("%w: --sizes: %q is not a size from %d bytes to 64MiB", errUsage, s, msgHeader)
		}
		cfg.Sizes = append(cfg.Sizes, int(n))
	}
	if _, err := pickList("codec", cfg.Codec, codecs); err != nil || strings.Contains(cfg.Codec, ",") {
		return cfg, fmt.Errorf("%w: --codec: want one of %s", errUsage, strings.Join(codecs, ", "))
	}
	if cfg.Codec == "fixed" {
		for _, n := range cfg.Sizes {
			if !slices.Contains(fixedSizes, n) {
				return cfg, fmt.Errorf("%w: --codec fixed supports sizes %v, not %d", errUsage, fixedSizes, n)
			}
		}
	}
	switch {
	case cfg.Producers < 1 || cfg.Consumers < 1:
		return cfg, fmt.Errorf("%w: --producers and --consumers must be at least 1", errUsage)
	case cfg.Duration <= 0 || cfg.Rate <= 0 || cfg.Sleep <= 0:
		return cfg, fmt.Errorf("%w: --duration, --rate and --sleep must be positive", errUsage)
	case cfg.Batch < 1 || cfg.Batch > maxBatch:
		return cfg, fmt.Errorf("%w: --batch must be from 1 to %d", errUsage, maxBatch)
	}
	for _, n := range cfg.Sizes {
		if cfg.Batch*n > maxBatchBytes {
			return cfg, fmt.Errorf("%w: --batch %d of %d-byte messages is more than 64MiB", errUsage, cfg.Batch, n)
		}
	}
	if cfg.Quick {
		cfg.Duration = min(cfg.Duration, 150*time.Millisecond)
	}
	return cfg, nil
}

// The largest --batch, and the most bytes one batch may hold (the kernel transports' buffer).
const (
	maxBatch      = 65536
	maxBatchBytes = 64 << 20
)

// pickList parses a comma-separated subset of allowed, keeping the order given.
func pickList(flagName, value string, allowed []string) ([]string, error) {
	var out []string
	for _, v := range strings.Split(value, ",") {
		v = strings.TrimSpace(v)
		ok := false
		for _, a := range allowed {
			ok = ok || v == a
		}
		if !ok {
			return nil, fmt.Errorf("%w: --%s: unknown %q (want some of %s)", errUsage, flagName, v, strings.Join(allowed, ","))
		}
		out = append(out, v)
	}
	return out, nil
}

// waitFor returns the ring wait strategy a --waits name means.
func (c config) waitFor(name string) ring.Wait {
	switch name {
	case "spin":
		return ring.Spin()
	case "sleep":
		return ring.Sleep(c.Sleep)
	case "futex":
		return ring.Futex()
	}
	return ring.Adaptive(0)
}

// cases lists what to run: every scenario x transport x wait (rings only) x size. --batch
// applies to the throughput scenario; the others move one message at a time.
func (c config) cases() []caseSpec {
	var out []caseSpec
	for _, sc := range c.Scenarios {
		if sc == rpcScenario {
			out = append(out, c.rpcCases()...)
			continue
		}
		for _, tr := range c.Transports {
			if tr == shmqTranport {
				continue // shmq stands for the broker, in the rpc scenario only
			}
			if tr == loopTransport {
				out = append(out, c.loopCases(sc)...)
				continue
			}
			if isFanout(tr) && sc == "pingpong" {
				continue // one publisher to many subscribers: nothing to ping-pong
			}
			waits := []string{""}
			if tr == "spsc" || tr == "mpmc" || isFanout(tr) {
				waits = c.Waits
			}
			for _, w := range waits {
				for _, size := range c.Sizes {
					cs := caseSpec{Scenario: sc, Transport: tr, Wait: w, Size: size, Producers: 1, Consumers: 1, Batch: 1}
					if sc == "throughput" {
						cs.Batch = c.Batch
					}
					if (tr == "mpmc" && (sc == "throughput" || sc == "latency")) || isFanout(tr) {
						cs.Producers, cs.Consumers = c.Producers, c.Consumers
					}
					out = append(out, cs)
				}
			}
		}
	}
	return out
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "shmbench: %v\n", strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	}
	b, err := newBench(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "shmbench: %v\n", err)
		return 1
	}
	defer b.cleanup()
	// An interrupt kills every child and removes every segment before exiting.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			b.cleanup()
			os.Exit(130)
		}
	}()

	cases := cfg.cases()
	var results []Result
	failed := false
	for i, cs := range cases {
		fmt.Fprintf(stderr, "\r\033[K[%d/%d] %s", i+1, len(cases), cs.label())
		res, err := b.runCase(cs)
		if err != nil {
			fmt.Fprintf(stderr, "\r\033[Kshmbench: %s: %v\n", cs.label(), err)
			failed = true
			continue
		}
		if res.Lost != 0 || res.Corrupt != 0 {
			failed = true
		}
		results = append(results, res)
	}
	fmt.Fprint(stderr, "\r\033[K")

	rep := Report{Version: reportVersion, Host: hostInfo(), Results: results}
	printTable(stdout, rep)
	if cfg.JSON != "" {
		if err := writeJSONReport(cfg.JSON, stdout, rep); err != nil {
			fmt.Fprintf(stderr, "shmbench: %v\n", err)
			return 1
		}
	}
	if cfg.Plot != "" {
		if err := writePlot(cfg.Plot, rep); err != nil {
			fmt.Fprintf(stderr, "shmbench: %v\n", err)
			return 1
		}
	}
	for _, r := range results {
		if r.Lost != 0 || r.Corrupt != 0 {
			fmt.Fprintf(stderr, "shmbench: %s/%s/%s: %d lost, %d corrupt\n", r.Scenario, r.Transport, r.Wait, r.Lost, r.Corrupt)
		}
	}
	if failed {
		return 1
	}
	return 0
}

func hostInfo() Host {
	h := Host{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		var b strings.Builder
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b.WriteByte(byte(c))
		}
		h.Kernel = b.String()
	}
	return h
}

func (cs caseSpec) label() string {
	name := cs.Transport
	if cs.Wait != "" {
		name += "/" + cs.Wait
	}
	s := fmt.Sprintf("%s %s %s", cs.Scenario, name, units.FormatSize(uint64(cs.Size)))
	if cs.Producers > 1 || cs.Consumers > 1 {
		s += " " + strconv.Itoa(cs.Producers) + "x" + strconv.Itoa(cs.Consumers)
	}
	if cs.Batch > 1 {
		s += " batch " + strconv.Itoa(cs.Batch)
	}
	return s
}
