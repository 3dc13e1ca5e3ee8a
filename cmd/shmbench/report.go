//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
)

// reportVersion is the version of the JSON schema below; it changes only when a field
// changes meaning or goes away.
const reportVersion = 1

// Report is the JSON document --json writes (README "shmbench JSON").
type Report struct {
	Version int      `json:"version"`
	Host    Host     `json:"host"`
	Results []Result `json:"results"`
}

// Host describes the machine.
type Host struct {
	CPUs   int    `json:"cpus"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// Result is one case.
type Result struct {
	Scenario       string     `json:"scenario"`
	Transport      string     `json:"transport"`
	Wait           string     `json:"wait"` // empty for the kernel's transports, spin for the floor
	Size           int        `json:"size"`
	Batch          int        `json:"batch"` // throughput: messages per publish (--batch); 1 otherwise
	Codec          string     `json:"codec"` // raw, fixed, json (fixed and json on rings only)
	Producers      int        `json:"producers"`
	Consumers      int        `json:"consumers"`
	Messages       uint64     `json:"messages"`
	Seconds        float64    `json:"seconds"`
	MsgsPerSec     float64    `json:"msgs_per_sec"`
	BytesPerSec    float64    `json:"bytes_per_sec"`
	Latency        *Latency   `json:"latency_ns"` // latency and pingpong; null otherwise
	CPUSeconds     CPUSeconds `json:"cpu_seconds"`
	CPUNsPerMsg    float64    `json:"cpu_ns_per_msg"`
	IdleCPUPercent float64    `json:"idle_cpu_percent"`
	Lost           uint64     `json:"lost"`
	Corrupt        uint64     `json:"corrupt"`
	// Fanout has the publisher's and each subscriber's figures (pubsub, fanout-spsc).
	Fanout *FanoutResult `json:"fanout,omitempty"`
}

// Latency percentiles in nanoseconds: one-way (latency) or half round trip (pingpong).
type Latency struct {
	P50  int64 `json:"p50"`
	P90  int64 `json:"p90"`
	P99  int64 `json:"p99"`
	P999 int64 `json:"p999"`
	Max  int64 `json:"max"`
}

// CPUSeconds is the CPU time of each side (pingpong: writer = pinger, reader = echoer).
type CPUSeconds struct {
	Writer float64 `json:"writer"`
	Reader float64 `json:"reader"`
}

// finish derives the rates from the counts.
func (r *Result) finish() {
	if r.Seconds > 0 && r.Scenario != "idle" {
		r.MsgsPerSec = float64(r.Messages) / r.Seconds
		r.BytesPerSec = r.MsgsPerSec * float64(r.Size)
	}
	if r.Messages > 0 {
		r.CPUNsPerMsg = (r.CPUSeconds.Writer + r.CPUSeconds.Reader) * 1e9 / float64(r.Messages)
	}
}

func (r Result) name() string {
	n := r.Transport
	if r.Wait != "" {
		n += "/" + r.Wait
	}
	if r.Codec != "" && r.Codec != "raw" {
		n += "+" + r.Codec
	}
	return n
}

// label is the TRANSPORT cell of the table: the name, MPMC's processes, the batch.
func (r Result) label() string {
	l := r.name()
	if r.Producers > 1 || r.Consumers > 1 {
		l += fmt.Sprintf(" %dx%d", r.Producers, r.Consumers)
	}
	if r.Batch > 1 {
		l += fmt.Sprintf(" batch %d", r.Batch)
	}
	return l
}

func writeJSONReport(path string, stdout io.Writer, rep Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func fmtRate(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtBytes(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 1e9:
		return fmt.Sprintf("%.2f GB/s", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1f MB/s", v/1e6)
	}
	return fmt.Sprintf("%.1f kB/s", v/1e3)
}

func fmtNs(ns int64) string {
	switch {
	case ns >= 1e9:
		return fmt.Sprintf("%.2fs", float64(ns)/1e9)
	case ns >= 1e6:
		return fmt.Sprintf("%.2fms", float64(ns)/1e6)
	case ns >= 1e4:
		return fmt.Sprintf("%.0fµs", float64(ns)/1e3)
	}
	return fmt.Sprintf("%.2fµs", float64(ns)/1e3)
}

// printTable writes one row per case and a summary line per ring configuration compared
// with the Unix socket (the fastest general-purpose kernel transport here) and with the
// floor.
func printTable(w io.Writer, rep Report) {
	fmt.Fprintf(w, "shmbench: %d CPUs, Linux %s, %s\n\n", rep.Host.CPUs, rep.Host.Kernel, rep.Host.Go)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SCENARIO\tTRANSPORT\tSIZE\tMSG/S\tBYTES/S\tP50\tP99\tP99.9\tMAX\tCPU W+R\tCPU/MSG\tIDLE CPU\tLOST\tCORRUPT\t")
	for _, r := range rep.Results {
		p50, p99, p999, mx := "-", "-", "-", "-"
		if l := r.Latency; l != nil {
			p50, p99, p999, mx = fmtNs(l.P50), fmtNs(l.P99), fmtNs(l.P999), fmtNs(l.Max)
		}
		cpuMsg, idle := "-", "-"
		if r.CPUNsPerMsg > 0 {
			cpuMsg = fmtNs(int64(r.CPUNsPerMsg))
		}
		if r.Scenario == "idle" {
			idle = fmt.Sprintf("%.2f%%", r.IdleCPUPercent)
		}
		name := r.label()
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%.2fs+%.2fs\t%s\t%s\t%d\t%d\t\n",
			r.Scenario, name, r.Size, fmtRate(r.MsgsPerSec), fmtBytes(r.BytesPerSec), p50, p99, p999, mx,
			r.CPUSeconds.Writer, r.CPUSeconds.Reader, cpuMsg, idle, r.Lost, r.Corrupt)
	}
	tw.Flush()
	printFanout(w, rep.Results)
	printRPCSummary(w, rep.Results)
	if lines := summary(rep.Results, "unix", "floor/spin"); len(lines) > 0 {
		fmt.Fprintln(w)
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
}

// summary compares every ring configuration (and the floor) with the baseline transport,
// per size: throughput, one-way p50, ping-pong p50 and idle CPU; and every shmq ring with
// the floor: shmq's throughput over the floor's (1x is the floor, less is slower) and
// shmq's ping-pong p50 over the floor's (more is slower).
func summary(results []Result, baseline, floor string) []string {
	type key struct {
		scenario, name string
		size           int
	}
	byKey := map[key]Result{}
	var names []key
	for _, r := range results {
		k := key{r.Scenario, r.name(), r.Size}
		byKey[k] = r
		if r.Wait != "" {
			nk := key{"", r.name(), r.Size}
			if _, seen := byKey[nk]; !seen {
				byKey[nk] = r
				names = append(names, nk)
			}
		}
	}
	var out []string
	for _, n := range names {
		var parts []string
		ratio := func(scenario string, get func(Result) float64, lowerIsBetter bool, better, worse string) {
			a, okA := byKey[key{scenario, n.name, n.size}]
			b, okB := byKey[key{scenario, baseline, n.size}]
			if !okA || !okB {
				return
			}
			va, vb := get(a), get(b)
			if va <= 0 || vb <= 0 || math.IsNaN(va) || math.IsNaN(vb) {
				return
			}
			x := va / vb // how many times better than the baseline
			if lowerIsBetter {
				x = vb / va
			}
			if x >= 1 {
				parts = append(parts, fmt.Sprintf("%sx %s", fmtRatio(x), better))
			} else {
				parts = append(parts, fmt.Sprintf("%sx %s", fmtRatio(1/x), worse))
			}
		}
		p50 := func(r Result) float64 {
			if r.Latency == nil {
				return 0
			}
			return float64(r.Latency.P50)
		}
		ratio("throughput", func(r Result) float64 { return r.MsgsPerSec }, false, "throughput", "less throughput")
		ratio("latency", p50, true, "lower p50", "higher p50")
		ratio("pingpong", p50, true, "lower ping-pong p50", "higher ping-pong p50")
		if a, ok := byKey[key{"idle", n.name, n.size}]; ok {
			parts = append(parts, fmt.Sprintf("idle CPU %.2f%%", a.IdleCPUPercent))
		}
		line := ""
		if len(parts) > 0 {
			line = fmt.Sprintf("%s vs %s (%dB): %s", n.name, baseline, n.size, strings.Join(parts, ", "))
		}
		if n.name != floor {
			var fparts []string
			floorRatio := func(scenario, what string, get func(Result) float64) {
				a, okA := byKey[key{scenario, n.name, n.size}]
				f, okF := byKey[key{scenario, floor, n.size}]
				if va, vf := get(a), get(f); okA && okF && va > 0 && vf > 0 {
					fparts = append(fparts, fmt.Sprintf("%s %sx", what, fmtFloorRatio(va/vf)))
				}
			}
			floorRatio("throughput", "throughput", func(r Result) float64 { return r.MsgsPerSec })
			floorRatio("pingpong", "ping-pong p50", p50)
			switch {
			case len(fparts) > 0 && line != "":
				line += "; vs floor: " + strings.Join(fparts, ", ")
			case len(fparts) > 0:
				line = fmt.Sprintf("%s vs floor (%dB): %s", n.name, n.size, strings.Join(fparts, ", "))
			}
		}
		if line != "" {
			out = append(out, line)
		}
	}
	return out
}

// fmtFloorRatio writes a shmq/floor ratio with two significant digits: 0.43, 1.2, 12.
func fmtFloorRatio(x float64) string {
	if x < 1 {
		return fmt.Sprintf("%.2f", x)
	}
	return fmtRatio(x)
}

func fmtRatio(x float64) string {
	if x >= 10 {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.1f", x)
}
