//go:build linux

package history

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// restartParams: two clients, and critical sections (25 writes 80ms apart)
// longer than the TTL, so that one holds the lock, renewed, while the
// masters under it restart, and is told of the loss when it is lost.
func restartParams(fenceOff bool) params {
	return params{
		clients:       2,
		ttl:           1500 * time.Millisecond,
		writes:        25,
		gap:           80 * time.Millisecond,
		idle:          20 * time.Millisecond,
		masterTimeout: 200 * time.Millisecond,
		lockWait:      10 * time.Second,
		fenceOff:      fenceOff,
	}
}

// TestHistoryRestartFence: while a client holds the lock, the masters that
// hold its key are restarted (empty) one after the other, without delay.
// Without the client's restart fence, the other client then gets the lock
// on the restarted masters while the first still holds it, and the checker
// must find that double grant; with the fence (the default) it must find
// nothing.
func TestHistoryRestartFence(t *testing.T) {
	t.Run("off", func(t *testing.T) {
		r := runHistory(t, restartParams(true), restartSchedule(6, true))
		t.Logf("fence off: %s", r.totals())
		if r.overlaps == 0 {
			t.Fatalf("the checker found no double grant with the restart fence off: it cannot fail, or the schedule missed (%d violations)\n%s",
				len(r.violations), strings.Join(r.violations, "\n"))
		}
		t.Logf("fence off: the checker found the double grant, as it must:\n%s", r.violations[0])
	})
	t.Run("on", func(t *testing.T) {
		cycles := 2 // CI: within the package's minute
		if *flagLong {
			cycles = 10
		}
		r := runHistory(t, restartParams(false), restartSchedule(cycles, false))
		t.Logf("fence on: %s", r.totals())
		if r.failed() {
			t.Errorf("with the restart fence on: %d violations:\n%s", len(r.violations), strings.Join(r.violations, "\n"))
		}
	})
}

// restartSchedule: cycles times, wait until a client holds the lock, then
// restart the masters that hold its key (a majority of them) one after the
// other, and give the other client time to get in. With stopEarly it stops
// at the first overlap the checker finds.
func restartSchedule(cycles int, stopEarly bool) func(c *cluster) {
	return func(c *cluster) {
		for range cycles {
			holding, ok := c.waitHeld(10 * time.Second)
			if !ok {
				c.record(fault{Kind: "restart-cycle", Start: time.Now().UnixNano(), Err: "no holder within 10s"})
				continue
			}
			for _, i := range holding[:masters/2+1] {
				f := fault{Kind: fRestartMaster, Start: time.Now().UnixNano(), Detail: fmt.Sprintf("master %d (held the key)", i)}
				if err := c.servers[i].Restart(); err != nil {
					f.Err = err.Error()
				}
				f.End = time.Now().UnixNano()
				c.record(f)
			}
			time.Sleep(2*c.p.ttl + 500*time.Millisecond)
			if stopEarly {
				accepted, refused := c.res.snapshot()
				if check(c.snapshot(), accepted, refused, nil).overlaps > 0 {
					return
				}
			}
		}
	}
}

// waitHeld waits, at most d, until a client is in a critical section and a
// majority of the masters hold the lock key; it returns those masters.
func (c *cluster) waitHeld(d time.Duration) ([]int, bool) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if len(c.holding()) > 0 {
			var holding []int
			for i, s := range c.servers {
				if v, err := s.Do("EXISTS", c.name); err == nil && v.(int64) == 1 {
					holding = append(holding, i)
				}
			}
			if len(holding) > masters/2 {
				return holding, true
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil, false
}
