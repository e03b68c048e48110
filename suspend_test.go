package distlock_test

import (
	"context"
	"sync"
	"sync/atomic"
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

// TestSuspendBeforeNewLease: a wall-clock step of an hour (or an hour's
// suspend) right after Lock leaves the new lease no validity, and Token
// refuses it.
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

// TestSuspendDuringRenewalCountedOnce: a suspend while an extension round is
// in flight, longer than the renewal interval, is taken off once: the
// round's validity and the lease's are both settled for it (found by
// review: it was counted twice and the lease was lost).
func TestSuspendDuringRenewalCountedOnce(t *testing.T) {
	sc := &suspendClock{Mock: clock.NewMock()}
	_, proxies, c := proxied(t, 3, distlock.WithClock(sc), distlock.WithMasterTimeout(5*time.Second))
	var inflight atomic.Int64
	distlock.SetRenewHook(c, func(_ time.Time, n int) { inflight.Store(int64(n)) })
	ttl := 30 * time.Second
	lease, err := newMutex(t, c, lockName(t), distlock.WithTTL(ttl), distlock.WithDrift(0, 0), distlock.WithRenewalMargin(time.Second)).Lock(context.Background())
	require.NoError(t, err)
	// Master 0 answers at once (before the suspend), master 1 after it
	// (its reply decides the round), master 2 late.
	proxies[1].SetLatency(500 * time.Millisecond)
	proxies[2].SetLatency(3 * time.Second)
	for i := 0; i < 10; i++ {
		time.Sleep(20 * time.Millisecond)
		sc.Add(time.Second)
	}
	require.Eventually(t, func() bool { return inflight.Load() == 1 }, 2*time.Second, time.Millisecond)
	time.Sleep(150 * time.Millisecond)
	sc.Suspend(15 * time.Second)
	sc.Add(time.Millisecond)
	time.Sleep(2 * time.Second)
	t.Logf("now %v until %v err %v rounds %d", sc.Now(), lease.Until(), lease.Err(), distlock.RenewalRounds(lease))
	// The extension succeeded at t0=10s: valid until 10s+30s-15s = 25s (mono), now is 10.001s.
	require.NoError(t, lease.Err(), "lease lost though its extension left 15s of validity")
	assert.True(t, lease.Until().Equal(time.Unix(25, 0)), "valid until 10s+30s-15s, as the monotonic clock counts: %v", lease.Until())
	require.NoError(t, lease.Unlock(context.Background()))
}
