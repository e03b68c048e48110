//go:build linux

package history

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// ciParams is the profile of the faulted runs: K clients with a short TTL,
// so that pauses past the lease happen; master 0 has a replica to fail over
// to; two streams of master faults, so that two masters are down at times
// (the most five masters tolerate).
func ciParams() params {
	return params{
		clients:       *flagClients,
		ttl:           600 * time.Millisecond,
		writes:        3,
		gap:           10 * time.Millisecond,
		idle:          5 * time.Millisecond,
		masterTimeout: 150 * time.Millisecond,
		lockWait:      2 * time.Second,
		stall:         25,
		masterStreams: 2,
		replicas:      []int{0},
		fenceOff:      *flagFenceOff,
	}
}

// TestHistory runs the seeded fault schedule with K client processes and
// checks the history (see the package doc). CI profile: one seed, 10s of
// faults. With -long: -seeds seeds, -duration each (default 60s).
func TestHistory(t *testing.T) {
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()) % 1_000_000_007
	}
	d := *flagDuration
	seeds := 1
	if *flagLong {
		seeds = *flagSeeds
		if d == 0 {
			d = 60 * time.Second
		}
	}
	if d == 0 {
		d = 10 * time.Second
	}
	if *flagClients < 8 {
		t.Logf("note: -clients %d (the brief asks for at least 8)", *flagClients)
	}
	for n := range seeds {
		s := seed + uint64(n)
		t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
			r := runHistory(t, ciParams(), func(c *cluster) { c.runFaults(s, d) })
			t.Logf("seed %d, %v of faults, %d clients: %s", s, d, *flagClients, r.totals())
			if r.failed() {
				t.Errorf("seed %d: %d violations (replay: go test ./history -run 'TestHistory$' -seed %d -duration %v):\n%s",
					s, len(r.violations), s, d, strings.Join(r.violations, "\n"))
			}
			if r.sections < 10 {
				t.Errorf("seed %d: only %d critical sections ran: the run checked almost nothing", s, r.sections)
			}
		})
	}
}

// runHistory starts a cluster with p, lets the clients run while schedule
// runs, heals, stops the clients and checks everything (checks 1 to 5). It
// fails t only for a broken harness (a client that did not exit cleanly,
// lines that are not events); violations are in the report.
func runHistory(t *testing.T, p params, schedule func(c *cluster)) *report {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t0 := time.Now()
	c := newCluster(t, p)
	c.startClients()
	t1 := time.Now()
	schedule(c)
	t2 := time.Now()
	// Every fault has been healed by the schedule; let the clients stop.
	problems := c.stopClients(30 * time.Second)
	t.Logf("start %v, schedule %v, clients stopped in %v", t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), time.Since(t2).Round(time.Millisecond))
	for _, p := range problems {
		t.Errorf("%s", p)
	}
	c.mu.Lock()
	bad := append([]string(nil), c.bad...)
	c.mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("client output that is not an event:\n%s", strings.Join(bad, "\n"))
	}
	checked := time.Now().UnixNano()
	c.mu.Lock()
	faults := append([]fault(nil), c.faults...)
	c.mu.Unlock()
	// Check 4: every client closed, so no lock key is left; except one
	// that a failover kept (replication is asynchronous: the release that
	// deleted it on the old master may not have reached the replica; the
	// README's operator's hazard), on a master promoted within the last two
	// TTLs, and expiring within one TTL.
	left, afterFailover := c.leftKeys(func(i int, pttl int64) bool {
		return pttl > 0 && pttl <= p.ttl.Milliseconds() && promotedSince(faults, i, checked-2*int64(p.ttl))
	})
	for _, l := range afterFailover {
		t.Logf("left by a failover (asynchronous replication), expiring within its TTL: %s", l)
	}
	accepted, refused := c.res.snapshot()
	r := check(c.snapshot(), accepted, refused, faults)
	r.faultsByKind = c.faultCounts()
	if len(left) > 0 {
		r.keysLeft = len(left)
		var b strings.Builder
		fmt.Fprintf(&b, "KEYS LEFT after every client closed (checked at %s):\n  %s\n", stamp(checked), strings.Join(left, "\n  "))
		// What happened in the last two TTLs: the key was set within one.
		from := checked - 2*int64(p.ttl)
		all, _, _ := sections(c.snapshot())
		for _, sec := range all {
			if sec.acq >= from {
				sec.dump(&b)
			}
		}
		faultsNear(&b, faults, from, checked)
		r.violations = append(r.violations, b.String())
	}
	c.teardown()
	// Check 5: nothing of the run is left in the parent.
	if err := goleak.Find(ignore); err != nil {
		r.leaks++
		r.violations = append(r.violations, fmt.Sprintf("GOROUTINES LEFT in the parent: %v", err))
	}
	return r
}

// promotedSince reports whether master i was failed over to its replica in a
// fault that ended at or after since (Unix ns).
func promotedSince(faults []fault, i int, since int64) bool {
	for _, f := range faults {
		var j int
		if f.Kind == fPromote && f.End >= since && f.Err == "" {
			if _, err := fmt.Sscanf(f.Detail, "master %d:", &j); err == nil && j == i {
				return true
			}
		}
	}
	return false
}
