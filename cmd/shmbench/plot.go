//go:build linux

package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"strings"
)

// bar is one horizontal bar of a panel; a bar with two values draws the second (p99) as a
// thinner bar over the first (p50).
type bar struct {
	label  string
	values []float64
}

type panel struct {
	title string
	unit  func(float64) string
	bars  []bar
}

// writePlot writes an SVG with one panel per measure: throughput, one-way latency (p50 and
// p99), ping-pong latency and idle CPU, each bar labelled with its value, on log scales so
// that kernel and shared-memory transports fit one axis.
func writePlot(path string, rep Report) error {
	panels := []panel{
		{title: "Throughput (messages/s, higher is better; log scale)", unit: fmtRate},
		{title: "One-way latency at fixed rate (p50 bar, p99 line; lower is better; log scale)", unit: func(v float64) string { return fmtNs(int64(v)) }},
		{title: "Ping-pong, half round trip (p50 bar, p99 line; lower is better; log scale)", unit: func(v float64) string { return fmtNs(int64(v)) }},
		{title: "Idle reader CPU (% of a core, lower is better; log scale)", unit: func(v float64) string { return fmt.Sprintf("%.2f%%", v) }},
	}
	for _, r := range rep.Results {
		label := fmt.Sprintf("%s %dB", r.name(), r.Size)
		if r.Batch > 1 {
			label += fmt.Sprintf(" batch %d", r.Batch)
		}
		switch r.Scenario {
		case "throughput":
			panels[0].bars = append(panels[0].bars, bar{label, []float64{r.MsgsPerSec}})
		case "latency", "pingpong":
			i := 1
			if r.Scenario == "pingpong" {
				i = 2
			}
			if r.Latency != nil {
				panels[i].bars = append(panels[i].bars, bar{label, []float64{float64(r.Latency.P50), float64(r.Latency.P99)}})
			}
		case "idle":
			panels[3].bars = append(panels[3].bars, bar{label, []float64{r.IdleCPUPercent}})
		}
	}
	var b strings.Builder
	const width, labelW, rowH, barW = 900, 190, 18, 560
	height := 40
	for _, p := range panels {
		if len(p.bars) > 0 {
			height += 40 + rowH*len(p.bars) + 20
		}
	}
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="10" y="24" font-size="16">shmbench: %d CPUs, Linux %s, %s</text>`+"\n",
		rep.Host.CPUs, html.EscapeString(rep.Host.Kernel), html.EscapeString(rep.Host.Go))
	y := 40
	for _, p := range panels {
		if len(p.bars) == 0 {
			continue
		}
		fmt.Fprintf(&b, `<text x="10" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", y+20, html.EscapeString(p.title))
		y += 32
		lo, hi := math.Inf(1), 0.0
		for _, br := range p.bars {
			for _, v := range br.values {
				if v > 0 {
					lo, hi = math.Min(lo, v), math.Max(hi, v)
				}
			}
		}
		lo = math.Max(lo/2, 1e-3)
		scale := func(v float64) float64 {
			if v <= lo || hi <= lo {
				return 2
			}
			return 2 + (barW-2)*math.Log(v/lo)/math.Log(hi*1.05/lo)
		}
		for _, br := range p.bars {
			color := "#4e79a7" // shmq rings
			switch {
			case strings.HasPrefix(br.label, "floor"):
				color = "#9c9c9c" // the floor: no shmq code
			case !strings.HasPrefix(br.label, "spsc") && !strings.HasPrefix(br.label, "mpmc"):
				color = "#e15759" // kernel transports
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, labelW-6, y+13, html.EscapeString(br.label))
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`, labelW, y+3, scale(br.values[0]), rowH-6, color)
			end := scale(br.values[0])
			if len(br.values) > 1 {
				fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="2" fill="black"/>`, labelW, y+rowH/2, scale(br.values[1]))
				end = math.Max(end, scale(br.values[1]))
			}
			text := p.unit(br.values[0])
			if len(br.values) > 1 {
				text += " / " + p.unit(br.values[1])
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(labelW)+end+6, y+13, html.EscapeString(text))
			y += rowH
		}
		y += 20
	}
	b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
