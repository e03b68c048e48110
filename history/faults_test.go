//go:build linux

package history

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"
)

// Fault kinds.
const (
	fPauseMaster   = "pause-master"   // SIGSTOP a master, SIGCONT later
	fRestartMaster = "restart-master" // kill and start again at once, empty
	fKillMaster    = "kill-master"    // kill, wait, start again on the same port, empty
	fPromote       = "promote"        // kill a master, promote its replica, point the proxies at it
	fLatency       = "latency"        // delay one client's link to one master
	fBlackhole     = "blackhole"      // cut one client's link to one master
	fPauseClient   = "pause-client"   // SIGSTOP a client process past its TTL, SIGCONT
)

// fault is one fault injected, for the totals and the reports.
type fault struct {
	Kind   string
	Start  int64 // Unix ns
	End    int64
	Detail string
	Err    string
}

func (f fault) String() string {
	s := fmt.Sprintf("%s %s..%s %s", f.Kind, stamp(f.Start), stamp(f.End), f.Detail)
	if f.Err != "" {
		s += " (error: " + f.Err + ")"
	}
	return s
}

// stamp prints a Unix ns time as wall-clock time with microseconds.
func stamp(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).UTC().Format("15:04:05.000000")
}

func (c *cluster) record(f fault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = append(c.faults, f)
}

// faultCounts returns how many faults of each kind were injected.
func (c *cluster) faultCounts() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := map[string]int{}
	for _, f := range c.faults {
		n[f.Kind]++
	}
	kinds := make([]string, 0, len(n))
	for k := range n {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for _, k := range kinds {
		fmt.Fprintf(&b, "%s=%d ", k, n[k])
	}
	return strings.TrimSpace(b.String())
}

// span returns the duration at fraction u (in [0, 1)) of [lo, hi).
func span(u float64, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(u*float64(hi-lo))
}

// runFaults runs the seeded schedule for d: c.p.masterStreams streams of
// master faults (each fault on one master, never two faults on one master
// at once, so with two streams at most two of the five masters are down or
// paused at a time) and one stream of link and client faults, each stream
// from its own generator seeded by seed. Every fault is healed before it
// returns.
func (c *cluster) runFaults(seed uint64, d time.Duration) {
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for n := range c.p.masterStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.masterFaults(rand.New(rand.NewPCG(seed, uint64(10+n))), end)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.linkFaults(rand.New(rand.NewPCG(seed, 2)), end)
	}()
	wg.Wait()
}

func (c *cluster) masterFaults(r *rand.Rand, end time.Time) {
	kinds := []string{fPauseMaster, fRestartMaster, fKillMaster, fPromote}
	for time.Now().Before(end) {
		// Every step draws the same values whatever happens, so that a seed
		// replays the same schedule.
		gap, i, kind, pick, u1, u2 := r.Float64(), r.IntN(masters), kinds[r.IntN(len(kinds))], r.IntN(1<<20), r.Float64(), r.Float64()
		time.Sleep(span(gap, 100*time.Millisecond, 700*time.Millisecond))
		if kind == fPromote && len(c.p.replicas) > 0 {
			i = c.p.replicas[pick%len(c.p.replicas)] // a master with a replica behind it
		}
		if !c.busy[i].TryLock() {
			continue // another stream's fault is on master i
		}
		if kind == fPromote && c.spare[i] == nil {
			kind = fRestartMaster // no replica (none, or it failed to come back)
		}
		f := fault{Kind: kind, Start: time.Now().UnixNano()}
		var err error
		switch kind {
		case fPauseMaster:
			hold := span(u1, 100*time.Millisecond, 2*c.p.ttl)
			f.Detail = fmt.Sprintf("master %d for %v", i, hold.Round(time.Millisecond))
			if err = c.servers[i].Pause(); err == nil {
				time.Sleep(hold)
				err = c.servers[i].Resume()
			}
		case fRestartMaster:
			f.Detail = fmt.Sprintf("master %d", i)
			err = c.servers[i].Restart()
		case fKillMaster:
			down := span(u1, 100*time.Millisecond, 2*c.p.ttl)
			f.Detail = fmt.Sprintf("master %d down for %v", i, down.Round(time.Millisecond))
			_ = c.servers[i].Kill()
			time.Sleep(down)
			err = c.servers[i].Start()
		case fPromote:
			err = c.promote(i, u1, u2, &f)
		}
		c.busy[i].Unlock()
		f.End = time.Now().UnixNano()
		if err != nil {
			f.Err = err.Error()
		}
		c.record(f)
	}
}

// promote fails master i over to its replica: kill the master, REPLICAOF NO
// ONE on the replica, point every client's proxy for i at it; later the old
// master comes back, empty, as the new one's replica (ready for the next
// failover, the other way).
func (c *cluster) promote(i int, u1, u2 float64, f *fault) error {
	old, rep := c.servers[i], c.spare[i]
	_ = old.Kill()
	gap := span(u1, 0, 50*time.Millisecond) // the failover's detection time
	time.Sleep(gap)
	if err := rep.Promote(); err != nil {
		return err
	}
	for k := range c.proxies {
		c.proxies[k][i].SetTarget(rep.Addr())
	}
	c.servers[i], c.spare[i] = rep, old
	f.Detail = fmt.Sprintf("master %d: %s -> %s after %v", i, old.Addr(), rep.Addr(), gap.Round(time.Millisecond))
	time.Sleep(span(u2, 100*time.Millisecond, 500*time.Millisecond))
	if err := old.Start(); err != nil {
		c.spare[i] = nil
		return err
	}
	if err := old.ReplicaOf(rep); err != nil {
		c.spare[i] = nil
		return err
	}
	return nil
}

func (c *cluster) linkFaults(r *rand.Rand, end time.Time) {
	kinds := []string{fLatency, fBlackhole, fPauseClient}
	for time.Now().Before(end) {
		gap, k, i, kind, aim, pick, u1, u2 := r.Float64(), r.IntN(len(c.clients)), r.IntN(masters), kinds[r.IntN(3)], r.IntN(4), r.IntN(1<<20), r.Float64(), r.Float64()
		time.Sleep(span(gap, 50*time.Millisecond, 400*time.Millisecond))
		f := fault{Kind: kind, Start: time.Now().UnixNano()}
		var err error
		switch kind {
		case fLatency:
			lat, hold := span(u1, time.Millisecond, c.p.ttl/3), span(u2, 100*time.Millisecond, 1500*time.Millisecond)
			f.Detail = fmt.Sprintf("client %d - master %d: %v for %v", k, i, lat.Round(time.Millisecond), hold.Round(time.Millisecond))
			c.proxies[k][i].SetLatency(lat)
			time.Sleep(hold)
			c.proxies[k][i].SetLatency(0)
		case fBlackhole:
			hold := span(u1, 100*time.Millisecond, 2*c.p.ttl)
			f.Detail = fmt.Sprintf("client %d - master %d for %v", k, i, hold.Round(time.Millisecond))
			c.proxies[k][i].SetBlackhole(true)
			time.Sleep(hold)
			c.proxies[k][i].SetBlackhole(false)
		case fPauseClient:
			// Three times in four, the client in a critical section, if
			// any: Kleppmann's pause hits a holder.
			if h := c.holding(); len(h) > 0 && aim != 0 {
				k = h[pick%len(h)]
			}
			hold := c.p.ttl + span(u1, 50*time.Millisecond, c.p.ttl)
			f.Detail = fmt.Sprintf("client %d for %v", k, hold.Round(time.Millisecond))
			if err = c.clients[k].pause(); err == nil {
				time.Sleep(hold)
				err = c.clients[k].resume()
			}
		}
		f.End = time.Now().UnixNano()
		if err != nil {
			f.Err = err.Error()
		}
		c.record(f)
	}
}
