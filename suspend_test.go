package distlock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// suspendClock is a mock clock that can simulate a suspended host: its times
// are the monotonic clock, which stands still during a suspend, and Wall
// gives their wall-clock reading, which moves on (see WithClock).
type suspendClock struct {
	*clock.Mock
	mu    sync.Mutex
	jumps []suspension
}

type suspension struct {
	at time.Time // the monotonic time of the suspend
	d  time.Duration
}

// Suspend records that the host slept for d at the current time: the wall
// readings of later times are d further on. Move the mock clock on (Add)
// before reading it again.
func (c *suspendClock) Suspend(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.jumps = append(c.jumps, suspension{c.Now(), d})
}

// Wall is the wall-clock reading of t.
func (c *suspendClock) Wall(t time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, j := range c.jumps {
		if j.at.Before(t) {
			t = t.Add(j.d)
		}
	}
	return t
}

// TestSuspendHazard: A's host is suspended past its lease (its monotonic
// clock stops; here A's mock clock stands still while real time passes),
// the keys expire on the masters and B takes the lock. Without wall
// readings (the guard's input) A's Until still looks valid: the hazard.
// With them, A's Until is in the past at once, and the watchdog ends the
// lease (Done closes) at its next check.
func TestSuspendHazard(t *testing.T) {
	for _, guard := range []bool{false, true} {
		t.Run(map[bool]string{false: "without wall readings", true: "guarded"}[guard], func(t *testing.T) {
			servers := distlocktest.NewServers(t, 3)
			addrs := distlocktest.Addrs(servers)
			mock := clock.NewMock()
			var clk clock.Clock = mock
			sc := &suspendClock{Mock: mock}
			if guard {
				clk = sc
			}
			a := newClient(t, addrs, distlock.WithClock(clk))
			name := lockName(t)
			ttl := 500 * time.Millisecond
			lease, err := newMutex(t, a, name, distlock.WithTTL(ttl)).Lock(context.Background())
			require.NoError(t, err)

			// The suspend: real time passes (the keys expire), A's clock does not.
			time.Sleep(ttl + 200*time.Millisecond)
			sc.Suspend(ttl + 200*time.Millisecond)
			mock.Add(time.Millisecond) // the host resumed

			b := newClient(t, addrs)
			lb, err := newMutex(t, b, name, distlock.WithTTL(time.Minute)).TryLock(context.Background())
			require.NoError(t, err, "the keys expired on the masters")
			defer lb.Unlock(context.Background())

			if !guard {
				assert.True(t, lease.Until().After(mock.Now()), "the hazard: A's lease still looks valid while B holds the lock")
				return
			}
			assert.False(t, lease.Until().After(mock.Now()), "A's Until counts the suspended time")
			mock.Add(time.Second) // the watchdog's next check for a suspend
			select {
			case <-lease.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the watchdog did not end the lease after the suspend")
			}
			require.ErrorIs(t, lease.Err(), distlock.ErrLeaseLost)
			assert.Contains(t, lease.Err().Error(), "suspended")
		})
	}
}

// TestShortSuspendRevalidates: a suspend shorter than the lease's validity
// shortens Until by the suspended time, and the watchdog extends the lease at
// its next check, on a quorum, instead of at its usual time.
func TestShortSuspendRevalidates(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	sc := &suspendClock{Mock: clock.NewMock()}
	c := newClient(t, distlocktest.Addrs(servers), distlock.WithClock(sc))
	ttl := 30 * time.Second
	lease, err := newMutex(t, c, lockName(t), distlock.WithTTL(ttl), distlock.WithDrift(0, 0), distlock.WithRenewalMargin(time.Second)).Lock(context.Background())
	require.NoError(t, err)
	t0 := sc.Now()
	require.Equal(t, t0.Add(ttl), lease.Until())

	sc.Suspend(4 * time.Second)
	sc.Add(time.Millisecond)
	// Until is shorter at once, unless the watchdog (woken by the Lock)
	// already saw the suspend and extended the lease.
	if until := lease.Until(); distlock.RenewalRounds(lease) == 0 {
		assert.Equal(t, t0.Add(ttl-4*time.Second), until, "the suspended time is taken off at once")
	}

	sc.Add(time.Second) // the watchdog's check: it extends now, not at ttl/3
	require.Eventually(t, func() bool { return distlock.RenewalRounds(lease) == 1 && lease.Until().After(t0.Add(ttl)) }, 5*time.Second, time.Millisecond,
		"extended on a quorum at the check: Until %v", lease.Until())
	assert.False(t, lease.Until().After(sc.Now().Add(ttl)))
	require.NoError(t, lease.Err())
	require.NoError(t, lease.Unlock(context.Background()))
}

// TestSuspendDuringAcquire: a Lock whose round spans a suspend gets a lease
// whose validity counts it.
func TestSuspendBeforeNewLease(t *testing.T) {
	servers := distlocktest.NewServers(t, 1)
	sc := &suspendClock{Mock: clock.NewMock()}
	c := newClient(t, distlocktest.Addrs(servers), distlock.WithClock(sc))
	lease, err := newMutex(t, c, lockName(t), distlock.WithTTL(time.Minute), distlock.WithDrift(0, 0)).Lock(context.Background())
	require.NoError(t, err)
	t0 := sc.Now()
	sc.Suspend(time.Hour) // the wall clock stepped forward an hour: no lease survives that
	sc.Add(time.Millisecond)
	assert.True(t, lease.Until().Before(t0), "Until %v", lease.Until())
	_, err = lease.Token(context.Background())
	require.ErrorIs(t, err, distlock.ErrNotHeld, "no fencing token for a lease that ran out")
}
