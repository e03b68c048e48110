package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// benchHelp is the synopsis and description of distlock bench.
const benchHelp = `
Usage: distlock bench [flags]

Measures the lock against the masters of --servers, or against N local
redis-server processes that it starts (and stops at exit) with --local N.

Uncontended (the default): each of --concurrency goroutines locks and
unlocks its own name in a loop, through one shared Client (its requests to
each master are pipelined on one connection): lock+unlock cycles per second,
and the latency of Lock, Unlock and the whole cycle.

--contended: every goroutine locks the same name, each through its own
Client, as separate processes would; each holds it for --hold and unlocks.
It reports handoffs per second, the wait in Lock, and the handoff latency:
from one holder's Unlock call to the next holder's acquisition.

On a terminal a progress line is shown; at the end a table, or with --json a
single JSON object (latencies in milliseconds).
`

// benchExamples is the end of distlock bench's help.
const benchExamples = `
Examples:
  distlock bench --local 3 --duration 5s
  distlock bench --local 3 --contended --concurrency 4 --json
  distlock bench --servers r1:6379,r2:6379,r3:6379 --concurrency 32

Exit status:
  0 done, 64 usage error, 69 the masters could not be used or every attempt failed
`

// benchFlags are distlock bench's own flags.
type benchFlags struct {
	common      commonFlags
	local       int
	concurrency int
	duration    time.Duration
	contended   bool
	hold        time.Duration
	name        string
	json        bool
}

// benchResult is the outcome of a bench run; it is also the --json output.
type benchResult struct {
	Mode        string                    `json:"mode"`
	Masters     int                       `json:"masters"`
	Concurrency int                       `json:"concurrency"`
	TTLMillis   float64                   `json:"ttl_ms"`
	Seconds     float64                   `json:"duration_s"`
	Ops         int64                     `json:"ops"`
	OpsPerSec   float64                   `json:"ops_per_s"`
	Errors      int64                     `json:"errors"`
	FirstError  string                    `json:"first_error,omitempty"`
	Latency     map[string]latencySummary `json:"latency_ms"`
	order       []string                  // the keys of Latency, in table order
	endErr      error                     // a Lock cut short by the end of the run
}

// latencySummary is a distribution of durations, in milliseconds.
type latencySummary struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// cmdBench is distlock bench: see benchHelp.
func cmdBench(args []string) int {
	fs := newFlagSet("bench")
	var f benchFlags
	f.common.register(fs, true)
	fs.IntVar(&f.local, "local", 0, "start this many local redis-server masters instead of using --servers")
	fs.IntVar(&f.concurrency, "concurrency", 8, "number of goroutines")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long to run")
	fs.BoolVar(&f.contended, "contended", false, "all goroutines on one name (handoffs), instead of one name each")
	fs.DurationVar(&f.hold, "hold", 0, "with --contended: how long each holder keeps the lock")
	fs.StringVar(&f.name, "name", "distlock-bench", "lock name (uncontended: prefix of the names)")
	fs.BoolVar(&f.json, "json", false, "print the result as one JSON object")
	help := helpFunc(fs, benchHelp, benchExamples)
	pos, _, _, err := parseArgs(fs, args)
	switch {
	case err != nil:
	case len(pos) > 0:
		err = usagef("unexpected argument %q", pos[0])
	case f.local < 0 || f.local > 15:
		err = usagef("--local %d: must be 0-15", f.local)
	case f.concurrency < 1:
		err = usagef("--concurrency %d: must be at least 1", f.concurrency)
	case f.duration <= 0:
		err = usagef("--duration %v: must be positive", f.duration)
	case f.hold < 0:
		err = usagef("--hold %v: must not be negative", f.hold)
	}
	if err != nil {
		return parseFailed("bench", err, help)
	}

	ctx, stop := signal.NotifyContext(context.Background(), forwardedSignals...)
	defer stop()
	defer signal.Ignore(forwardedSignals...) // before stop (defers run last first): a late signal must not kill the exit
	if f.local > 0 {
		servers, err := distlocktest.StartServers(f.local)
		if err != nil {
			errorf("starting %d redis-server: %v", f.local, err)
			return exitUnavailable
		}
		defer distlocktest.CloseAll(servers)
		f.common.servers = strings.Join(distlocktest.Addrs(servers), ",")
		// Just started and empty: no lock can be lost on them, so the
		// restart fence (which would keep them out for one TTL) is off.
		f.common.restartFence = "off"
		fmt.Fprintf(os.Stderr, "distlock: started %d local redis-server masters: %s\n", f.local, f.common.servers)
	}
	if ctx.Err() != nil {
		return exitOK
	}
	res, err := runBench(ctx, &f)
	if err != nil {
		errorf("%v", err)
		if errors.As(err, new(usageError)) {
			return exitUsage
		}
		return exitUnavailable
	}
	if f.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else {
		res.print(os.Stdout)
	}
	if res.Ops == 0 && ctx.Err() == nil {
		if res.Errors == 0 && res.endErr != nil {
			errorf("no lock was acquired: %v", res.endErr)
		}
		return exitUnavailable
	}
	return exitOK
}

// benchWorker is what one goroutine measured.
type benchWorker struct {
	lock, unlock, cycle, wait, handoff []time.Duration
	errors                             int64
	firstErr                           error
	endErr                             error // the error of a Lock that the end of the run cut short
}

// runBench runs the benchmark until f.duration has passed or ctx ends.
func runBench(ctx context.Context, f *benchFlags) (*benchResult, error) {
	opts, err := clientOptions(&f.common)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	nClients := 1
	if f.contended {
		nClients = f.concurrency
	}
	clients := make([]*distlock.Client, nClients)
	for i := range clients {
		if clients[i], err = distlock.NewClient(f.common.addrs(), opts...); err != nil {
			for _, c := range clients[:i] {
				c.Close()
			}
			return nil, usageError{err.Error()}
		}
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	mutexes := make([]*distlock.Mutex, f.concurrency)
	for i := range mutexes {
		name := f.name
		if !f.contended {
			name = fmt.Sprintf("%s:%d", f.name, i)
		}
		if mutexes[i], err = clients[i%nClients].NewMutex(name, distlock.WithTTL(f.common.ttl)); err != nil {
			return nil, usageError{err.Error()}
		}
	}

	runCtx, cancel := context.WithTimeout(ctx, f.duration)
	defer cancel()
	var (
		ops         atomic.Int64
		mu          sync.Mutex // guards lastRelease and lastHolder
		lastRelease time.Time
		lastHolder  = -1
		wg          sync.WaitGroup
		workers     = make([]benchWorker, f.concurrency)
	)
	start := time.Now()
	for i := range workers {
		w := &workers[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				t0 := time.Now()
				lease, err := mutexes[i].Lock(runCtx)
				if err != nil {
					if runCtx.Err() == nil {
						w.errors++
						if w.firstErr == nil {
							w.firstErr = err
						}
					} else {
						w.endErr = err // a Lock cut by the end of the run
					}
					if errors.Is(err, distlock.ErrPermanent) || errors.Is(err, distlock.ErrClosed) {
						return // retrying cannot help
					}
					continue
				}
				t1 := time.Now()
				if f.contended {
					w.wait = append(w.wait, t1.Sub(t0))
					mu.Lock()
					if lastHolder >= 0 && lastHolder != i {
						w.handoff = append(w.handoff, t1.Sub(lastRelease))
					}
					mu.Unlock()
					if f.hold > 0 {
						time.Sleep(f.hold)
					}
					mu.Lock()
					lastRelease, lastHolder = time.Now(), i
					mu.Unlock()
				} else {
					w.lock = append(w.lock, t1.Sub(t0))
				}
				t2 := time.Now()
				uctx, ucancel := context.WithTimeout(context.Background(), 2*f.common.masterTimeout+time.Second)
				err = lease.Unlock(uctx)
				ucancel()
				if err != nil {
					w.errors++
					if w.firstErr == nil {
						w.firstErr = err
					}
					continue
				}
				if !f.contended {
					t3 := time.Now()
					w.unlock = append(w.unlock, t3.Sub(t2))
					w.cycle = append(w.cycle, t3.Sub(t0))
				}
				ops.Add(1)
			}
		}()
	}

	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	progress := !f.json && isTerminal(os.Stdout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			if progress {
				el := time.Since(start).Seconds()
				n := ops.Load()
				fmt.Fprintf(os.Stdout, "\r%5.1fs  %8d ops  %10.1f ops/s ", el, n, float64(n)/el)
			}
		}
	}
	if progress {
		fmt.Fprint(os.Stdout, "\r\033[K")
	}
	elapsed := time.Since(start)

	res := &benchResult{
		Mode:        "uncontended",
		Masters:     len(f.common.addrs()),
		Concurrency: f.concurrency,
		TTLMillis:   float64(f.common.ttl) / float64(time.Millisecond),
		Seconds:     elapsed.Seconds(),
		Ops:         ops.Load(),
		Latency:     map[string]latencySummary{},
	}
	res.OpsPerSec = float64(res.Ops) / elapsed.Seconds()
	merged := map[string][]time.Duration{}
	for _, w := range workers {
		res.Errors += w.errors
		if w.endErr != nil {
			res.endErr = w.endErr
		}
		if w.firstErr != nil && res.FirstError == "" {
			res.FirstError = w.firstErr.Error()
		}
		merged["lock"] = append(merged["lock"], w.lock...)
		merged["unlock"] = append(merged["unlock"], w.unlock...)
		merged["cycle"] = append(merged["cycle"], w.cycle...)
		merged["wait"] = append(merged["wait"], w.wait...)
		merged["handoff"] = append(merged["handoff"], w.handoff...)
	}
	res.order = []string{"lock", "unlock", "cycle"}
	if f.contended {
		res.Mode = "contended"
		res.order = []string{"wait", "handoff"}
	}
	for _, k := range res.order {
		res.Latency[k] = summarize(merged[k])
	}
	return res, nil
}

// summarize returns the percentiles of ds (nearest rank), in milliseconds.
func summarize(ds []time.Duration) latencySummary {
	if len(ds) == 0 {
		return latencySummary{}
	}
	slices.Sort(ds)
	at := func(p float64) float64 {
		i := int(p*float64(len(ds)) + 0.5)
		i = min(max(i-1, 0), len(ds)-1)
		return float64(ds[i]) / float64(time.Millisecond)
	}
	return latencySummary{Count: len(ds), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: at(1)}
}

// print writes the result as a table.
func (r *benchResult) print(w io.Writer) {
	unit := "cycles" // lock+unlock
	if r.Mode == "contended" {
		unit = "handoffs"
	}
	fmt.Fprintf(w, "mode          %s\n", r.Mode)
	fmt.Fprintf(w, "masters       %d\n", r.Masters)
	fmt.Fprintf(w, "concurrency   %d\n", r.Concurrency)
	fmt.Fprintf(w, "duration      %.2fs\n", r.Seconds)
	fmt.Fprintf(w, "%-13s %d\n", unit, r.Ops)
	fmt.Fprintf(w, "throughput    %.1f/s\n", r.OpsPerSec)
	fmt.Fprintf(w, "errors        %d", r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(w, "  (first: %s)", r.FirstError)
	}
	fmt.Fprintf(w, "\n\n%-10s %8s %9s %9s %9s %9s\n", "latency", "count", "p50", "p90", "p99", "max")
	for _, k := range r.order {
		s := r.Latency[k]
		fmt.Fprintf(w, "%-10s %8d %7.3fms %7.3fms %7.3fms %7.3fms\n", k, s.Count, s.P50, s.P90, s.P99, s.Max)
	}
}

// isTerminal reports whether f is a terminal (a character device).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
