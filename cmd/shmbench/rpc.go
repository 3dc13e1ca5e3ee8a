//go:build linux

package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/shmq/shmq/internal/rpcbench"
)

// rpc: request-response between two processes (internal/rpcbench): calls per second and
// round-trip p50/p99 of 1 and 8 callers (--callers), each request echoed. Over shmq (a
// broker connection, a pair of SPSC rings, with each of --waits; --transports spsc or
// shmq) and over a Unix socket (a length prefix; a connection per caller; --transports
// unix). gRPC is measured by the bench/rpc module's command, which runs the same cases
// over all three in one run: the core module never depends on gRPC.
const (
	rpcScenario  = "rpc"
	shmqTranport = "shmq"
)

// rpcTransport is the rpcbench transport a --transports name stands for in the rpc
// scenario ("" if none).
func rpcTransport(tr string) string {
	switch tr {
	case "spsc", shmqTranport:
		return shmqTranport
	case "unix":
		return "unix"
	}
	return ""
}

// rpcCases are the rpc scenario's cases: shmq once per wait strategy, a transport named
// twice (spsc and shmq) once.
func (c config) rpcCases() []caseSpec {
	var out []caseSpec
	seen := map[string]bool{}
	for _, tr := range c.Transports {
		name := rpcTransport(tr)
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		waits := []string{""}
		if name == shmqTranport {
			waits = c.Waits
		}
		for _, w := range waits {
			for _, size := range c.Sizes {
				for _, n := range c.Callers {
					out = append(out, caseSpec{Scenario: rpcScenario, Transport: name, Wait: w, Size: size, Producers: n, Consumers: 1, Batch: 1})
				}
			}
		}
	}
	return out
}

// runRPC runs one rpc case in two processes of its own (rpcbench.Run).
func (b *bench) runRPC(cs caseSpec, res Result) (Result, error) {
	rc := rpcbench.Case{Transport: cs.Transport, Callers: cs.Producers, Size: cs.Size, Duration: b.cfg.Duration}
	if cs.Wait != "" {
		rc.Wait = b.cfg.waitFor(cs.Wait).String()
	}
	res.Codec = "raw"
	r, err := rpcbench.Run(rc)
	if err != nil {
		return res, err
	}
	res.Messages, res.Seconds, res.Corrupt = r.Calls, r.Seconds, r.Bad
	res.Latency = &Latency{P50: r.P50, P90: r.P90, P99: r.P99, P999: r.P999, Max: r.Max}
	res.CPUSeconds = CPUSeconds{Writer: r.CallerCPU, Reader: r.ServerCPU}
	res.finish()
	return res, nil
}

// parseCallers reads --callers.
func parseCallers(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1024 {
			return nil, fmt.Errorf("%w: --callers: %q is not a number from 1 to 1024", errUsage, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// printRPCSummary compares each shmq rpc result with the unix one of the same size and
// callers: calls per second and p50.
func printRPCSummary(w io.Writer, results []Result) {
	type key struct{ size, callers int }
	unix := map[key]Result{}
	for _, r := range results {
		if r.Scenario == rpcScenario && r.Transport == "unix" {
			unix[key{r.Size, r.Producers}] = r
		}
	}
	var lines []string
	for _, r := range results {
		u, ok := unix[key{r.Size, r.Producers}]
		if r.Scenario != rpcScenario || r.Transport != shmqTranport || !ok || r.Latency == nil || u.Latency == nil || r.MsgsPerSec <= 0 || r.Latency.P50 <= 0 {
			continue
		}
		p50 := fmt.Sprintf("%sx lower p50", fmtRatio(float64(u.Latency.P50)/float64(r.Latency.P50)))
		if r.Latency.P50 > u.Latency.P50 {
			p50 = fmt.Sprintf("%sx higher p50", fmtRatio(float64(r.Latency.P50)/float64(u.Latency.P50)))
		}
		lines = append(lines, fmt.Sprintf("rpc %s vs unix, %d caller(s), %dB: %sx the calls/s, %s",
			r.name(), r.Producers, r.Size, fmtFloorRatio(r.MsgsPerSec/u.MsgsPerSec), p50))
	}
	if len(lines) > 0 {
		fmt.Fprintln(w)
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
}
