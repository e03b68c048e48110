package main

import (
	"encoding/csv"
	"fmt"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// key identifies a row across runs.
type key struct {
	Scenario, Library   string
	Masters, Goroutines int
	Note                string
}

func keyOf(r result) key { return key{r.Scenario, r.Library, r.Masters, r.Goroutines, r.Note} }

// find returns the row of run rs with k's fields.
func find(rs []result, scenario, library string, masters, goroutines int, note string) (result, bool) {
	for _, r := range rs {
		if r.Scenario == scenario && r.Library == library && r.Masters == masters && r.Goroutines == goroutines && (note == "" || strings.Contains(r.Note, note)) {
			return r, true
		}
	}
	return result{}, false
}

// bestLibrary returns the row of run rs, among the libraries other than
// distlock (no reference code) in the scenario with that many masters and
// goroutines, with the highest ops/s.
func bestLibrary(rs []result, scenario string, masters, goroutines int) (result, bool) {
	var best result
	found := false
	for _, r := range rs {
		if r.Scenario != scenario || r.Reference || r.Library == "distlock" || r.Masters != masters || r.Goroutines != goroutines {
			continue
		}
		if !found || r.OpsPerSec > best.OpsPerSec {
			best, found = r, true
		}
	}
	return best, found
}

// lowestP99 returns the lowest p99 among the libraries other than distlock
// in the scenario with that many masters.
func lowestP99(rs []result, scenario string, masters int) (result, bool) {
	var best result
	found := false
	for _, r := range rs {
		if r.Scenario != scenario || r.Reference || r.Library == "distlock" || r.Masters != masters {
			continue
		}
		if !found || r.P99 < best.P99 {
			best, found = r, true
		}
	}
	return best, found
}

// headline is one ratio of the summary, computed within each run.
type headline struct {
	what   string
	target string
	ratio  func(rs []result) (v float64, detail string, ok bool)
}

func opsRatio(scenario string, masters, g int, lib, libNote, ref, refNote string) func([]result) (float64, string, bool) {
	return func(rs []result) (float64, string, bool) {
		a, ok1 := find(rs, scenario, lib, masters, g, libNote)
		b, ok2 := find(rs, scenario, ref, masters, g, refNote)
		if !ok1 || !ok2 || b.OpsPerSec == 0 {
			return 0, "", false
		}
		return a.OpsPerSec / b.OpsPerSec, fmt.Sprintf("%.0f / %.0f", a.OpsPerSec, b.OpsPerSec), true
	}
}

func bestRatio(scenario string, masters, g int, note string) func([]result) (float64, string, bool) {
	return func(rs []result) (float64, string, bool) {
		a, ok1 := find(rs, scenario, "distlock", masters, g, note)
		b, ok2 := bestLibrary(rs, scenario, masters, g)
		if !ok1 || !ok2 || b.OpsPerSec == 0 {
			return 0, "", false
		}
		return a.OpsPerSec / b.OpsPerSec, fmt.Sprintf("%.0f / %.0f %s", a.OpsPerSec, b.OpsPerSec, b.Library), true
	}
}

func p99Ratio(masters int, note, ref, refNote string) func([]result) (float64, string, bool) {
	return func(rs []result) (float64, string, bool) {
		a, ok1 := find(rs, "S2", "distlock", masters, 8, note)
		var b result
		var ok2 bool
		if ref == "" {
			b, ok2 = lowestP99(rs, "S2", masters)
		} else {
			b, ok2 = find(rs, "S2", ref, masters, 8, refNote)
		}
		if !ok1 || !ok2 || b.P99 == 0 {
			return 0, "", false
		}
		return float64(a.P99) / float64(b.P99), fmt.Sprintf("%s / %s ms %s", ms(a.P99), ms(b.P99), b.Library), true
	}
}

func serverRatio(masters int) func([]result) (float64, string, bool) {
	return func(rs []result) (float64, string, bool) {
		a, ok1 := find(rs, "S1", "distlock", masters, 32, "")
		b, ok2 := find(rs, "S1", "pipelined", masters, 32, "")
		if !ok1 || !ok2 || b.ServerUS == 0 {
			return 0, "", false
		}
		return a.ServerUS / b.ServerUS, fmt.Sprintf("%.1f / %.1f µs", a.ServerUS, b.ServerUS), true
	}
}

func allocs(masters int, note string) func([]result) (float64, string, bool) {
	return func(rs []result) (float64, string, bool) {
		a, ok := find(rs, "S3", "distlock", masters, 1, note)
		return a.Allocs, fmt.Sprintf("%.0f B", a.Bytes), ok
	}
}

var headlines = []headline{
	{"S1 1 master, 32 goroutines: distlock ÷ pipelined (the limit)", "≥ 0.9", opsRatio("S1", 1, 32, "distlock", "", "pipelined", "")},
	{"S1 1 master, 32 goroutines: distlock ÷ best library", "> 1", bestRatio("S1", 1, 32, "")},
	{"S1 3 masters, 32 goroutines: distlock ÷ pipelined (the limit)", "≥ 0.9", opsRatio("S1", 3, 32, "distlock", "", "pipelined", "")},
	{"S1 3 masters, 32 goroutines: distlock ÷ best library", "> 1", bestRatio("S1", 3, 32, "")},
	{"S1 5 masters, 32 goroutines: distlock ÷ pipelined (the limit)", "", opsRatio("S1", 5, 32, "distlock", "", "pipelined", "")},
	{"S1 1 master, 1 goroutine: distlock ÷ naive", "≥ 1.0", opsRatio("S1", 1, 1, "distlock", "", "naive", "")},
	{"S1 3 masters, 1 goroutine: distlock ÷ naive", "≥ 1.0", opsRatio("S1", 3, 1, "distlock", "", "naive", "")},
	{"S1 1 master, 1 goroutine: distlock ÷ pipelined", "", opsRatio("S1", 1, 1, "distlock", "", "pipelined", "")},
	{"S1 3 masters, 1 goroutine: distlock ÷ pipelined", "", opsRatio("S1", 3, 1, "distlock", "", "pipelined", "")},
	{"server CPU per cycle, 1 master, 32 goroutines: distlock ÷ pipelined", "≤ 1.2", serverRatio(1)},
	{"server CPU per cycle, 3 masters, 32 goroutines: distlock ÷ pipelined", "≤ 1.2", serverRatio(3)},
	{"S2 1 master, one client per worker: handoffs/s, distlock ÷ best library", "≥ 1", bestRatio("S2", 1, 8, "one client per worker")},
	{"S2 1 master, one client per worker: p99 wait, distlock ÷ lowest library p99", "≤ 1", p99Ratio(1, "one client per worker", "", "")},
	{"S2 3 masters, one client per worker: handoffs/s, distlock ÷ best library", "≥ 1", bestRatio("S2", 3, 8, "one client per worker")},
	{"S2 3 masters, one client per worker: p99 wait, distlock ÷ lowest library p99", "≤ 1", p99Ratio(3, "one client per worker", "", "")},
	{"S2 1 master, one shared client: handoffs/s, distlock ÷ notify (the limit)", "", opsRatio("S2", 1, 8, "distlock", "shared", "notify", "shared")},
	{"S2 3 masters, one shared client: handoffs/s, distlock ÷ notify (the limit)", "≥ 0.9", opsRatio("S2", 3, 8, "distlock", "shared", "notify", "shared")},
	{"S2 3 masters, one shared client: p99 wait, distlock ÷ notify", "≤ 1.5", p99Ratio(3, "shared", "notify", "shared")},
	{"S3 allocations per cycle, 1 master, a Mutex made per call", "≤ 8", allocs(1, "per call")},
	{"S3 allocations per cycle, 3 masters, a Mutex made per call", "≤ 8", allocs(3, "per call")},
	{"S3 allocations per cycle, 3 masters, one Mutex reused", "≤ 6", allocs(3, "reused")},
	{"S4 one of 3 masters paused, 1 goroutine: paused ÷ healthy", "≥ 0.9", opsRatio("S4", 3, 1, "distlock", "paused", "distlock", "healthy")},
	{"S4 one of 3 masters paused, 32 goroutines: paused ÷ healthy", "≥ 0.9", opsRatio("S4", 3, 32, "distlock", "paused", "distlock", "healthy")},
	{"S6 1 goroutine: one 3-node cluster ÷ one plain master", "", opsRatio("S6", 1, 1, "distlock", "cluster", "distlock", "plain")},
	{"S6 32 goroutines: one 3-node cluster ÷ one plain master", "", opsRatio("S6", 1, 32, "distlock", "cluster", "distlock", "plain")},
}

// medians returns one row per key: the median of each measure over the runs
// (failures and overlaps summed).
func medians(all [][]result) []result {
	var order []key
	byKey := map[key][]result{}
	for _, rs := range all {
		for _, r := range rs {
			k := keyOf(r)
			if _, ok := byKey[k]; !ok {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], r)
		}
	}
	var out []result
	for _, k := range order {
		rs := byKey[k]
		m := rs[0]
		m.OpsPerSec = median(rs, func(r result) float64 { return r.OpsPerSec })
		m.AcqPerSec = median(rs, func(r result) float64 { return r.AcqPerSec })
		m.P50 = time.Duration(median(rs, func(r result) float64 { return float64(r.P50) }))
		m.P99 = time.Duration(median(rs, func(r result) float64 { return float64(r.P99) }))
		m.Allocs = median(rs, func(r result) float64 { return r.Allocs })
		m.Bytes = median(rs, func(r result) float64 { return r.Bytes })
		m.ServerUS = median(rs, func(r result) float64 { return r.ServerUS })
		m.Failures, m.Overlaps = 0, 0
		m.minOps, m.maxOps = rs[0].OpsPerSec, rs[0].OpsPerSec
		for _, r := range rs {
			m.Failures += r.Failures
			m.Overlaps += r.Overlaps
			m.minOps, m.maxOps = min(m.minOps, r.OpsPerSec), max(m.maxOps, r.OpsPerSec)
		}
		out = append(out, m)
	}
	return out
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func markdown(all [][]result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d runs of every row, one after the other, on the same redis-servers. Ratios are taken within each run, then the median and the spread (min–max) of the runs are given.\n\n", len(all))
	b.WriteString("| measure | target | median | spread | each run |\n|---|---|---|---|---|\n")
	for _, h := range headlines {
		var vals []float64
		var details []string
		for _, rs := range all {
			if v, d, ok := h.ratio(rs); ok {
				vals = append(vals, v)
				details = append(details, fmt.Sprintf("%.2f (%s)", v, d))
			}
		}
		if len(vals) == 0 {
			continue
		}
		sorted := slices.Clone(vals)
		slices.Sort(sorted)
		fmt.Fprintf(&b, "| %s | %s | **%.2f** | %.2f–%.2f | %s |\n", h.what, h.target, sorted[len(sorted)/2], sorted[0], sorted[len(sorted)-1], strings.Join(details, "; "))
	}
	b.WriteString("\nEvery row, median of the runs. S1/S4: uncontended lock+unlock cycles/s and cycle latency. ")
	b.WriteString("S2: 8 workers on one key, each holding it 1ms: handoffs/s (acquisitions by a worker other than the last holder), ")
	b.WriteString("all acquisitions/s, and the wait for the lock. S3: heap allocations and bytes per uncontended cycle. ")
	b.WriteString("S5: distlock's Semaphore, RWMutex reads and writes beside its Mutex, cycles/s. ")
	b.WriteString("S6: distlock's uncontended cycles/s on one master that is a Redis Cluster of 3 nodes (one seed address) beside one plain master. ")
	b.WriteString("Server µs (S1, S6): the masters' CPU (INFO cpu, user+sys, all masters or cluster nodes) per cycle. Kind: reference rows are code written for this comparison (the limit, a naive client), not libraries.\n\n")
	b.WriteString("| scenario | library | kind | masters | goroutines | ops/s | spread | acq/s | p50 ms | p99 ms | server µs | failed | overlaps | allocs/op | B/op | note |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	rows := medians(all)
	for _, r := range rows {
		kind := "library"
		if r.Reference {
			kind = "reference"
		}
		ops, spread, acq, p50, p99, server, allocs, bytes := fmt.Sprintf("%.0f", r.OpsPerSec), fmt.Sprintf("%.0f–%.0f", r.minOps, r.maxOps), "", ms(r.P50), ms(r.P99), "", "", ""
		if r.Scenario == "S2" {
			acq = fmt.Sprintf("%.0f", r.AcqPerSec)
		}
		if r.Scenario == "S1" || r.Scenario == "S6" {
			server = fmt.Sprintf("%.1f", r.ServerUS)
		}
		if r.Scenario == "S3" {
			ops, spread, p50, p99 = "", "", "", ""
			allocs, bytes = fmt.Sprintf("%.1f", r.Allocs), fmt.Sprintf("%.0f", r.Bytes)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %s | %s | %s | %s | %s | %s | %d | %d | %s | %s | %s |\n",
			r.Scenario, r.Library, kind, r.Masters, r.Goroutines, ops, spread, acq, p50, p99, server, r.Failures, r.Overlaps, allocs, bytes, r.Note)
	}
	b.WriteString("\nSettings:\n\n")
	seen := map[string]bool{}
	for _, r := range rows {
		k := r.Library + ": " + r.Settings
		if !seen[k] {
			seen[k] = true
			fmt.Fprintf(&b, "- %s\n", k)
		}
	}
	return b.String()
}

func writeCSV(path string, all [][]result) {
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	w := csv.NewWriter(f)
	_ = w.Write([]string{"run", "scenario", "library", "reference", "settings", "masters", "goroutines", "ops_per_s", "acquisitions_per_s", "p50_ms", "p99_ms", "server_us_per_cycle", "failures", "overlaps", "allocs_per_op", "bytes_per_op", "note"})
	for i, rs := range all {
		for _, r := range rs {
			_ = w.Write([]string{strconv.Itoa(i + 1), r.Scenario, r.Library, strconv.FormatBool(r.Reference), r.Settings, strconv.Itoa(r.Masters), strconv.Itoa(r.Goroutines),
				fmt.Sprintf("%.1f", r.OpsPerSec), fmt.Sprintf("%.1f", r.AcqPerSec), ms(r.P50), ms(r.P99), fmt.Sprintf("%.1f", r.ServerUS), strconv.FormatInt(r.Failures, 10), strconv.FormatInt(r.Overlaps, 10),
				fmt.Sprintf("%.1f", r.Allocs), fmt.Sprintf("%.0f", r.Bytes), r.Note})
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		log.Fatal(err)
	}
}
