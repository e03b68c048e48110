package distlock

import (
	"container/heap"
	"fmt"
	"time"
)

// A host that is suspended (a laptop's lid closed, a VM paused by its
// hypervisor) stops Go's monotonic clock, which measures every lease's
// validity (golang/go#24595), while the masters, on other hosts, go on and
// let the lock keys expire. So after a resume a lease's validity, measured
// on the monotonic clock alone, would look longer than it is. The wall clock
// does advance during a suspend: the time the wall clock moved beyond the
// monotonic clock since a lease's validity was computed is time the lease
// spent suspended, and it is taken off the lease's validity (Lease.Until at
// once, the watchdog within suspendCheckEvery of the resume). A step of the
// wall clock forward (an NTP step) is treated the same way: it can only make
// a lease end sooner.

// suspendCheckEvery is how often the watchdog compares the wall clock with
// the monotonic clock while it watches leases (a variable for tests).
var suspendCheckEvery = time.Second

// wallClock is implemented by a clock (WithClock) that gives the wall-clock
// reading of each of its times; tests use it to simulate a suspend. The real
// clock's times carry both readings.
type wallClock interface {
	Wall(t time.Time) time.Time
}

// wallOf returns the wall-clock reading of t, a time of the Client's clock.
func (c *Client) wallOf(t time.Time) time.Time {
	if c.wall != nil {
		return c.wall.Wall(t)
	}
	return t.Round(0) // strips the monotonic reading
}

// suspended returns how much more the wall clock than the monotonic clock
// moved from ref to now (both times of the Client's clock), or 0 when that
// is within noise: the time the host was suspended (or the wall clock
// stepped forward) in between.
func (c *Client) suspended(ref, now time.Time) time.Duration {
	if !c.watchSuspend {
		return 0
	}
	mono := now.Sub(ref)
	jump := c.wallOf(now).Sub(c.wallOf(ref)) - mono
	if jump > time.Millisecond+max(mono, 0)/1000 {
		return jump
	}
	return 0
}

// settled returns until, a validity computed from a round that started at
// basis, less the time the host was suspended since basis, and the time now
// from which later suspends count.
func (c *Client) settled(until, basis time.Time) (time.Time, time.Time) {
	now := c.clock.Now()
	return until.Add(-c.suspended(basis, now)), now
}

// checkSuspend compares the wall clock with the monotonic clock since the
// watchdog's last check and, when the host was suspended in between, takes
// the suspended time off every watched lease: a lease whose validity ran
// out is lost at once, the others are extended at once, so that a quorum
// confirms them. mu is held.
func (r *renewer) checkSuspend(now time.Time) {
	last := r.checkedAt
	r.checkedAt = now
	if last.IsZero() || r.c.suspended(last, now) == 0 {
		return
	}
	for _, w := range append([]*watch(nil), r.heap...) {
		l := w.lease
		l.mu.Lock()
		jump := r.c.suspended(l.basis, now)
		l.until, l.basis = l.until.Add(-jump), now
		until := l.until
		l.mu.Unlock()
		if jump == 0 {
			continue
		}
		w.deadline = until.Add(-w.m.cfg.safetyMargin())
		if !now.Before(w.deadline) {
			r.loseLocked(w, fmt.Errorf("its validity ran out while the host was suspended for %v (the wall clock moved that much more than the monotonic clock); it ended at %v", jump, until))
			continue
		}
		if !w.renewAt.IsZero() && w.round == nil {
			w.renewAt = now
		}
	}
	heap.Init(&r.heap)
}

// maxTime returns the later of a and b.
func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
