// Command compare measures distlock side by side with other Go lock
// libraries and three reference clients written for the comparison (the
// pipelined limit, the limit when waiting, a naive client), against the
// same redis-server processes it starts itself. It repeats every row -runs
// times and writes the ratios that matter (median and spread over the
// runs), every row (medians), a CSV of every run and an SVG chart.
//
//	go run ./compare -out results
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distlock/distlock/distlocktest"
)

// result is one row of the output.
type result struct {
	Scenario   string
	Library    string
	Reference  bool // code written for the comparison, not a library
	Settings   string
	Masters    int
	Goroutines int
	OpsPerSec  float64 // cycles/s (S1, S4) or handoffs/s (S2): acquisitions by another worker than the last holder
	AcqPerSec  float64 // S2: all acquisitions/s, including a worker taking the lock straight back
	P50, P99   time.Duration
	Failures   int64
	Overlaps   int64   // S2: acquisitions while another worker was still inside its critical section
	Allocs     float64 // per cycle (S3)
	Bytes      float64 // per cycle (S3)
	ServerUS   float64 // S1: the masters' CPU time per cycle, in microseconds (INFO cpu)
	Note       string
	Elapsed    time.Duration

	minOps, maxOps float64 // the spread of OpsPerSec over the runs (medians)
}

// printCommandStats prints, per command the server ran, the calls and the
// microseconds per cycle of the run that made cycles cycles.
func printCommandStats(s *distlocktest.Server, cycles float64) {
	v, err := s.Do("INFO", "commandstats")
	if err != nil {
		log.Fatal(err)
	}
	info, _ := v.([]byte)
	for _, line := range strings.Split(string(info), "\r\n") {
		k, val, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(k, "cmdstat_") {
			continue
		}
		var calls, usec float64
		for _, f := range strings.Split(val, ",") {
			fk, fv, _ := strings.Cut(f, "=")
			switch fk {
			case "calls":
				calls, _ = strconv.ParseFloat(fv, 64)
			case "usec":
				usec, _ = strconv.ParseFloat(fv, 64)
			}
		}
		log.Printf("    %-24s %6.2f calls/cycle %6.2f µs/cycle", strings.TrimPrefix(k, "cmdstat_"), calls/cycles, usec/cycles)
	}
}

// serverCPU returns the CPU time, in seconds, that the servers used so far.
func serverCPU(servers []*distlocktest.Server) float64 {
	total := 0.0
	for _, s := range servers {
		v, err := s.Do("INFO", "cpu")
		if err != nil {
			log.Fatal(err)
		}
		info, _ := v.([]byte)
		for _, line := range strings.Split(string(info), "\r\n") {
			k, val, ok := strings.Cut(line, ":")
			if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
				f, _ := strconv.ParseFloat(val, 64)
				total += f
			}
		}
	}
	return total
}

func main() {
	out := flag.String("out", "results", "directory for compare.md, compare.csv and compare.svg")
	dur := flag.Duration("duration", 2*time.Second, "length of each measurement")
	runs := flag.Int("runs", 3, "repetitions of the whole comparison; tables give the median and the spread")
	only := flag.String("only", "", "run only these scenarios (e.g. S2,S4); writes no files")
	libsFlag := flag.String("libs", "", "run only these libraries and references (e.g. distlock,redislock)")
	cmdstats := flag.Bool("commandstats", false, "print the first master's INFO commandstats per cycle after each S1 row")
	flag.Parse()
	run := func(s string) bool { return *only == "" || strings.Contains(*only, s) }
	if *libsFlag != "" {
		var keep []library
		for _, lib := range allLibraries {
			if slices.Contains(strings.Split(*libsFlag, ","), lib.name) {
				keep = append(keep, lib)
			}
		}
		libraries = keep
	}
	log.SetFlags(0)

	servers, err := distlocktest.StartServers(5)
	if err != nil {
		log.Fatal(err)
	}
	defer distlocktest.CloseAll(servers)
	addrs := distlocktest.Addrs(servers)
	flush := func() {
		for _, s := range servers {
			_, _ = s.Do("FLUSHALL")
		}
	}
	var all [][]result // per run
	for i := range *runs {
		log.Printf("run %d of %d", i+1, *runs)
		var results []result
		add := func(r result) {
			results = append(results, r)
			log.Printf("%-3s %-12s masters=%d g=%-2d %10.0f/s (acq %5.0f/s) p50 %-9v p99 %-9v fail %d overlaps %d allocs %.1f server %.1fµs %s", r.Scenario, r.Library, r.Masters, r.Goroutines,
				r.OpsPerSec, r.AcqPerSec, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Failures, r.Overlaps, r.Allocs, r.ServerUS, r.Note)
		}
		measure(servers, addrs, flush, *dur, run, *cmdstats, add)
		all = append(all, results)
	}

	if *only != "" {
		fmt.Print(markdown(all))
		return
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	write(filepath.Join(*out, "compare.md"), markdown(all))
	writeCSV(filepath.Join(*out, "compare.csv"), all)
	write(filepath.Join(*out, "compare.svg"), chart(medians(all)))
}

// measure runs every scenario once and reports each row to add.
func measure(servers []*distlocktest.Server, addrs []string, flush func(), dur time.Duration, run func(string) bool, cmdstats bool, add func(result)) {
	// S1: uncontended cycles, each goroutine on its own keys.
	for _, n := range []int{1, 3, 5} {
		if !run("S1") {
			break
		}
		for _, g := range []int{1, 32} {
			for _, lib := range libraries {
				if n > lib.maxMasters || !lib.s1 {
					continue
				}
				flush()
				l, err := lib.build(addrs[:n], false)
				if err != nil {
					log.Fatal(err)
				}
				for _, s := range servers[:n] {
					_, _ = s.Do("CONFIG", "RESETSTAT")
				}
				r := uncontendedCPU(l, servers[:n], g, dur)
				l.close()
				r.Scenario, r.Library, r.Reference, r.Settings, r.Masters = "S1", lib.name, lib.reference, lib.settings(false), n
				add(r)
				if cmdstats {
					printCommandStats(servers[0], r.OpsPerSec*r.Elapsed.Seconds())
				}
			}
		}
	}

	// S2: 8 workers on one key, each holding it for 1ms.
	for _, n := range []int{1, 3} {
		if !run("S2") {
			break
		}
		for _, lib := range libraries {
			if n > lib.maxMasters {
				continue
			}
			for _, aggressive := range lib.s2 {
				flush()
				r := contended(func() (locker, error) { return lib.build(addrs[:n], aggressive) }, dur, false)
				r.Scenario, r.Library, r.Reference, r.Settings, r.Masters = "S2", lib.name, lib.reference, lib.settings(aggressive), n
				r.Note = "defaults"
				if aggressive {
					r.Note = "aggressive"
				}
				r.Note += ", one client per worker"
				add(r)
			}
		}
		flush()
		r := contended(func() (locker, error) { return newDistlock(addrs[:n], false) }, dur, true)
		r.Scenario, r.Library, r.Settings, r.Masters, r.Note = "S2", "distlock", settingsOf("distlock", false), n, "defaults, one shared Client"
		add(r)
		flush()
		r = contended(func() (locker, error) { return newNotifyRef(addrs[:n]) }, dur, true)
		r.Scenario, r.Library, r.Reference, r.Settings, r.Masters, r.Note = "S2", "notify", true, settingsOf("notify", false), n, "defaults, one shared client"
		add(r)
	}

	// S3: allocations per uncontended cycle.
	for _, n := range []int{1, 3} {
		if !run("S3") {
			break
		}
		for _, lib := range libraries {
			if n > lib.maxMasters || !lib.s1 {
				continue
			}
			reuses := []bool{false}
			if lib.name == "distlock" {
				reuses = []bool{false, true}
			}
			for _, reuse := range reuses {
				flush()
				l, err := lib.build(addrs[:n], false)
				if err != nil {
					log.Fatal(err)
				}
				note := ""
				if dl, ok := l.(*distlockLocker); ok {
					dl.reuse = reuse
					note = "a Mutex made per call"
					if reuse {
						note = "one Mutex, reused"
					}
				}
				allocs, bytes := allocations(l)
				l.close()
				add(result{Scenario: "S3", Library: lib.name, Reference: lib.reference, Settings: lib.settings(false), Masters: n, Goroutines: 1, Allocs: allocs, Bytes: bytes, Note: note})
			}
		}
	}

	// S4: one of 3 masters paused (SIGSTOP), uncontended, beside a healthy
	// run of the same client.
	for _, g := range []int{1, 32} {
		if !run("S4") {
			break
		}
		for _, paused := range []bool{false, true} {
			flush()
			l, err := newDistlock(addrs[:3], false)
			if err != nil {
				log.Fatal(err)
			}
			note := "healthy"
			if paused {
				note = "1 of 3 paused"
				if err := servers[2].Pause(); err != nil {
					log.Fatal(err)
				}
			}
			r := uncontended(l, g, 2*dur) // the noisiest rows: twice as long
			if paused {
				if err := servers[2].Resume(); err != nil {
					log.Fatal(err)
				}
			}
			l.close()
			r.Scenario, r.Library, r.Settings, r.Masters, r.Note = "S4", "distlock", settingsOf("distlock", false), 3, note
			add(r)
		}
	}

	// S5: distlock's primitives beside its plain Mutex, 3 masters.
	for _, g := range []int{1, 32} {
		if !run("S5") {
			break
		}
		for _, p := range primitives {
			flush()
			l, err := p.build(addrs[:3], g)
			if err != nil {
				log.Fatal(err)
			}
			r := uncontended(l, g, dur)
			l.close()
			r.Scenario, r.Library, r.Settings, r.Masters, r.Note = "S5", "distlock "+p.name, "defaults", 3, p.note
			add(r)
		}
	}

	if run("S6") {
		clusterBesideMaster(servers[0], flush, dur, add)
	}
}

// clusterBesideMaster is S6: distlock's uncontended cycles on one master
// that is a Redis Cluster of 3 nodes, given by one seed address (the
// client finds the other nodes on the first MOVED), beside one plain
// master. It starts the cluster and stops it.
func clusterBesideMaster(plain *distlocktest.Server, flush func(), dur time.Duration, add func(result)) {
	c, err := distlocktest.StartCluster(3)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	targets := []struct {
		note    string
		servers []*distlocktest.Server
		addrs   []string
	}{
		{"1 plain master", []*distlocktest.Server{plain}, []string{plain.Addr()}},
		{"1 cluster of 3 nodes, one seed", c.Nodes(), c.Addrs()[:1]},
	}
	for _, g := range []int{1, 32} {
		for _, t := range targets {
			flush()
			for _, s := range c.Nodes() {
				_, _ = s.Do("FLUSHALL")
			}
			l, err := newDistlock(t.addrs, false)
			if err != nil {
				log.Fatal(err)
			}
			r := uncontendedCPU(l, t.servers, g, dur)
			l.close()
			r.Scenario, r.Library, r.Settings, r.Masters, r.Note = "S6", "distlock", settingsOf("distlock", false), 1, t.note
			add(r)
		}
	}
}

// uncontendedCPU runs uncontended (below) and sets the result's ServerUS:
// the CPU time of servers, the ones l locks on, per cycle.
func uncontendedCPU(l locker, servers []*distlocktest.Server, g int, d time.Duration) result {
	cpu0 := serverCPU(servers)
	r := uncontended(l, g, d)
	r.ServerUS = (serverCPU(servers) - cpu0) * 1e6 / (r.OpsPerSec * r.Elapsed.Seconds())
	return r
}

// uncontended runs lock/unlock cycles from g goroutines, each on its own
// key, for d (cycles already started finish).
func uncontended(l locker, g int, d time.Duration) result {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      []time.Duration
		failures atomic.Int64
		ops      atomic.Int64
	)
	start := time.Now()
	deadline := start.Add(d)
	for i := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("compare:s1:%d", i)
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				unlock, err := l.lock(ctx, key)
				if err == nil {
					err = unlock()
				}
				cancel()
				if err != nil {
					failures.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
				ops.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	p50, p99 := percentiles(lat)
	return result{Goroutines: g, OpsPerSec: float64(ops.Load()) / elapsed.Seconds(), P50: p50, P99: p99, Failures: failures.Load(), Elapsed: elapsed}
}

// contended runs 8 workers on one key; each holds it for 1ms. shared makes
// them share one locker (one Client) instead of one each.
func contended(build func() (locker, error), d time.Duration, shared bool) result {
	const workers = 8
	lockers := make([]locker, workers)
	for i := range lockers {
		if shared && i > 0 {
			lockers[i] = lockers[0]
			continue
		}
		l, err := build()
		if err != nil {
			log.Fatal(err)
		}
		lockers[i] = l
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		waits    []time.Duration
		failures atomic.Int64
		acquired atomic.Int64
		handoffs atomic.Int64
		holder   atomic.Int32
		inside   atomic.Int32
		overlaps atomic.Int64
	)
	holder.Store(-1)
	start := time.Now()
	deadline := start.Add(d)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
				unlock, err := lockers[i].lock(ctx, "compare:s2")
				cancel()
				if err != nil {
					failures.Add(1)
					time.Sleep(time.Millisecond)
					continue
				}
				mine = append(mine, time.Since(t0))
				acquired.Add(1)
				if holder.Swap(int32(i)) != int32(i) {
					handoffs.Add(1)
				}
				if inside.Add(1) > 1 {
					overlaps.Add(1) // mutual exclusion broken
				}
				time.Sleep(time.Millisecond) // the critical section
				inside.Add(-1)
				_ = unlock()
			}
			mu.Lock()
			waits = append(waits, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for i, l := range lockers {
		if !shared || i == 0 {
			l.close()
		}
	}
	p50, p99 := percentiles(waits)
	return result{Goroutines: workers, OpsPerSec: float64(handoffs.Load()) / elapsed.Seconds(),
		AcqPerSec: float64(acquired.Load()) / elapsed.Seconds(), P50: p50, P99: p99, Failures: failures.Load(), Overlaps: overlaps.Load()}
}

// allocations measures heap allocations per uncontended cycle, including
// the library's own goroutines.
func allocations(l locker) (allocs, bytes float64) {
	const cycles = 2000
	cycle := func() {
		unlock, err := l.lock(context.Background(), "compare:s3")
		if err != nil {
			log.Fatal(err)
		}
		if err := unlock(); err != nil {
			log.Fatal(err)
		}
	}
	for range 100 {
		cycle() // warm up: connections, script cache
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range cycles {
		cycle()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / cycles, float64(after.TotalAlloc-before.TotalAlloc) / cycles
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)*50/100], d[min(len(d)-1, len(d)*99/100)]
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }

func write(path, s string) {
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		log.Fatal(err)
	}
}
