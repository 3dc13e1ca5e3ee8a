//go:build linux

package main

import (
	"fmt"
	"io"
	"math"
)

// FanoutResult is a pubsub or fanout-spsc case's publisher and subscribers. The Result's
// messages, rates and CPU are the aggregate: every delivery to every subscriber counts.
type FanoutResult struct {
	Policy               string             `json:"policy,omitempty"` // pubsub: block or overwrite
	Published            uint64             `json:"published"`        // messages the publisher sent
	PublisherCPUNsPerMsg float64            `json:"publisher_cpu_ns_per_msg"`
	Missed               uint64             `json:"missed"` // pubsub overwrite: records overwritten before a subscriber read them
	Subscribers          []SubscriberResult `json:"subscribers"`
}

// SubscriberResult is one subscriber process.
type SubscriberResult struct {
	Messages   uint64   `json:"messages"`
	Missed     uint64   `json:"missed"`
	Seconds    float64  `json:"seconds"` // first to last message
	MsgsPerSec float64  `json:"msgs_per_sec"`
	CPUSeconds float64  `json:"cpu_seconds"`
	Latency    *Latency `json:"latency_ns"` // latency scenario; null otherwise
}

// rates returns the lowest, mean and highest per-subscriber message rate.
func (f *FanoutResult) rates() (lo, mean, hi float64) {
	lo = math.Inf(1)
	for _, s := range f.Subscribers {
		lo, hi = min(lo, s.MsgsPerSec), max(hi, s.MsgsPerSec)
		mean += s.MsgsPerSec
	}
	if len(f.Subscribers) == 0 {
		return 0, 0, 0
	}
	return lo, mean / float64(len(f.Subscribers)), hi
}

// printFanout writes a line per pubsub and fanout-spsc case (per-subscriber rates, the
// publisher's CPU per message published), then compares pubsub with fanout-spsc where the
// same run measured both at the same scenario, wait, size and subscriber count.
func printFanout(w io.Writer, results []Result) {
	type key struct {
		scenario, wait string
		size, subs     int
	}
	byKey := map[string]map[key]Result{}
	var lines []string
	for _, r := range results {
		f := r.Fanout
		if f == nil {
			continue
		}
		k := key{r.Scenario, r.Wait, r.Size, r.Consumers}
		if byKey[r.Transport] == nil {
			byKey[r.Transport] = map[key]Result{}
		}
		byKey[r.Transport][k] = r
		name := r.name()
		if f.Policy != "" {
			name += " (" + f.Policy + ")"
		}
		line := fmt.Sprintf("%s %s %dB, %d subscribers: published %d", r.Scenario, name, r.Size, len(f.Subscribers), f.Published)
		if r.Scenario != "idle" {
			lo, mean, hi := f.rates()
			line += fmt.Sprintf(", per subscriber %s msg/s (min %s, max %s)", fmtRate(mean), fmtRate(lo), fmtRate(hi))
		}
		if f.PublisherCPUNsPerMsg > 0 {
			line += ", publisher CPU " + fmtNs(int64(f.PublisherCPUNsPerMsg)) + "/msg"
		}
		if f.Missed > 0 {
			line += fmt.Sprintf(", missed %d", f.Missed)
		}
		lines = append(lines, line)
	}
	for k, ps := range byKey["pubsub"] {
		fo, ok := byKey["fanout-spsc"][k]
		if !ok || k.scenario != "throughput" || fo.MsgsPerSec <= 0 || fo.Fanout.PublisherCPUNsPerMsg <= 0 {
			continue
		}
		lines = append(lines, fmt.Sprintf("pubsub/%s vs fanout-spsc/%s (%dB, %d subscribers): aggregate throughput %sx, publisher CPU per message %sx",
			k.wait, k.wait, k.size, k.subs, fmtFloorRatio(ps.MsgsPerSec/fo.MsgsPerSec),
			fmtFloorRatio(ps.Fanout.PublisherCPUNsPerMsg/fo.Fanout.PublisherCPUNsPerMsg)))
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(w)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}
