package main

import (
	"fmt"
	"html"
	"strings"
)

// chart draws, for the headline scenarios, throughput and p99 per library as
// horizontal bars, each panel scaled to its own largest value.
func chart(rs []result) string {
	type panel struct {
		title string
		pick  func(r result) bool
	}
	panels := []panel{
		{"S1 uncontended, 3 masters, 32 goroutines", func(r result) bool { return r.Scenario == "S1" && r.Masters == 3 && r.Goroutines == 32 }},
		{"S1 uncontended, 1 master, 32 goroutines", func(r result) bool { return r.Scenario == "S1" && r.Masters == 1 && r.Goroutines == 32 }},
		{"S2 contended, 3 masters, 8 workers, 1 key, 1ms hold", func(r result) bool { return r.Scenario == "S2" && r.Masters == 3 }},
		{"S2 contended, 1 master, 8 workers, 1 key, 1ms hold", func(r result) bool { return r.Scenario == "S2" && r.Masters == 1 }},
		{"S4 distlock, 1 of 3 masters paused beside healthy, 32 goroutines", func(r result) bool { return r.Scenario == "S4" && r.Goroutines == 32 }},
	}
	const (
		width, labelW, barW, rowH, gap = 1060, 420, 280, 18, 40
	)
	var b strings.Builder
	var body strings.Builder
	y := 30
	for _, p := range panels {
		var rows []result
		for _, r := range rs {
			if p.pick(r) {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		maxOps, maxP99 := 0.0, 0.0
		for _, r := range rows {
			maxOps = max(maxOps, r.OpsPerSec)
			maxP99 = max(maxP99, float64(r.P99))
		}
		fmt.Fprintf(&body, `<text x="10" y="%d" font-weight="bold">%s</text>`+"\n", y, html.EscapeString(p.title))
		fmt.Fprintf(&body, `<text x="%d" y="%d" fill="#555">ops/s (higher is better)</text><text x="%d" y="%d" fill="#555">p99 ms (lower is better)</text>`+"\n",
			labelW, y, labelW+barW+40, y)
		y += 8
		for _, r := range rows {
			y += rowH
			label := r.Library
			if r.Reference {
				label += " [reference]"
			}
			if r.Scenario == "S2" || r.Scenario == "S4" {
				var parts []string
				if r.Note != "" {
					parts = append(parts, r.Note)
				}
				if r.Masters == 1 {
					parts = append(parts, "1 master")
				}
				if r.Failures > 0 {
					parts = append(parts, fmt.Sprintf("%d failed", r.Failures))
				}
				label += " (" + strings.Join(parts, ", ") + ")"
			}
			color := "#999"
			if r.Library == "distlock" {
				color = "#2a7"
			}
			w1 := 0.0
			if maxOps > 0 {
				w1 = r.OpsPerSec / maxOps * barW
			}
			w2 := 0.0
			if maxP99 > 0 {
				w2 = float64(r.P99) / maxP99 * barW
			}
			fmt.Fprintf(&body, `<text x="10" y="%d">%s</text>`+"\n", y, html.EscapeString(label))
			fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/><text x="%.1f" y="%d">%.0f</text>`+"\n",
				labelW, y-12, w1, rowH-4, color, float64(labelW)+w1+4, y, r.OpsPerSec)
			fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/><text x="%.1f" y="%d">%s</text>`+"\n",
				labelW+barW+40, y-12, w2, rowH-4, color, float64(labelW+barW+40)+w2+4, y, ms(r.P99))
		}
		y += gap
	}
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width+80, y)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	b.WriteString(body.String())
	b.WriteString("</svg>\n")
	return b.String()
}
