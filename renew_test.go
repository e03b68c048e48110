package distlock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

type armedEvent struct {
	at       time.Time
	inflight int
}

// renewEvents reports each time the watchdog of c arms its timer.
func renewEvents(c *distlock.Client) <-chan armedEvent {
	ch := make(chan armedEvent, 1<<12)
	distlock.SetRenewHook(c, func(at time.Time, inflight int) {
		select {
		case ch <- armedEvent{at, inflight}:
		default:
		}
	})
	return ch
}

// settle waits until the watchdog has armed its timer for a time after
// `after` with no extension round in flight, and returns that time. Events
// from before the clock last moved are at or before `after` and skipped.
func settle(t *testing.T, events <-chan armedEvent, after time.Time) time.Time {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-events:
			if e.inflight == 0 && e.at.After(after) {
				return e.at
			}
		case <-timeout:
			t.Fatalf("the watchdog did not arm its timer after %v", after)
		}
	}
}

func isDone(l *distlock.Lease) bool {
	select {
	case <-l.Done():
		return true
	default:
		return false
	}
}

// TestRenewalScheduleOnMockClock: extensions happen exactly every ttl/3,
// each moves Until to the start of its round + ttl - drift; when the
// masters fail, the lease is lost exactly at Until - margin, not a tick
// before.
func TestRenewalScheduleOnMockClock(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	clk := clock.NewMock()
	c := newClient(t, distlocktest.Addrs(servers), distlock.WithClock(clk), distlock.WithMasterTimeout(testTimeout))
	events := renewEvents(c)
	const ttl = 3 * time.Second
	drift := time.Duration(float64(ttl)*distlock.DefaultDriftFactor) + distlock.DefaultDriftConstant
	var lostErr atomic.Value
	m := newMutex(t, c, lockName(t), distlock.WithTTL(ttl), distlock.WithOnLost(func(err error) { lostErr.Store(err) }))

	t0 := clk.Now()
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	require.Equal(t, t0.Add(ttl-drift), lease.Until())

	at := settle(t, events, clk.Now())
	for i := 1; i <= 5; i++ {
		require.Equal(t, t0.Add(time.Duration(i)*ttl/3), at, "extension %d is due at t0 + %d*ttl/3", i, i)
		clk.Set(at)
		next := settle(t, events, at)
		assert.Equal(t, at.Add(ttl-drift), lease.Until(), "extension %d moved Until", i)
		assert.Equal(t, int64(i), distlock.RenewalRounds(lease))
		assert.False(t, isDone(lease))
		at = next
	}

	// Two of three masters die: extensions fail and are retried until the
	// safety deadline, where the lease is lost.
	require.NoError(t, servers[1].Kill())
	require.NoError(t, servers[2].Kill())
	deadline := lease.Until().Add(-drift) // the default margin is the drift
	for {
		require.False(t, isDone(lease), "lost before the safety deadline (clock at %v)", clk.Now())
		require.False(t, at.After(deadline), "scheduled past the safety deadline")
		clk.Set(at)
		if at.Equal(deadline) {
			break
		}
		at = settle(t, events, at)
	}
	select {
	case <-lease.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not lost at the safety deadline")
	}
	assert.Equal(t, deadline, clk.Now())
	assert.Greater(t, distlock.RenewalRounds(lease), int64(6), "failed extensions were retried")
	assert.ErrorIs(t, lease.Err(), distlock.ErrLeaseLost)
	assert.ErrorContains(t, lease.Err(), "safety deadline")
	assert.ErrorIs(t, context.Cause(lease.Context()), distlock.ErrLeaseLost)
	require.Eventually(t, func() bool { return lostErr.Load() != nil }, 5*time.Second, time.Millisecond, "OnLost is called")
	assert.Equal(t, lease.Err(), lostErr.Load())
}

func TestWithoutRenewalLostAtDeadline(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	clk := clock.NewMock()
	c := newClient(t, distlocktest.Addrs(servers), distlock.WithClock(clk))
	events := renewEvents(c)
	m := newMutex(t, c, lockName(t), distlock.WithTTL(time.Second), distlock.WithoutRenewal(), distlock.WithRenewalMargin(100*time.Millisecond))
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	deadline := lease.Until().Add(-100 * time.Millisecond)
	require.Equal(t, deadline, settle(t, events, clk.Now()), "the only timer is the safety deadline")

	clk.Set(deadline.Add(-time.Nanosecond))
	assert.False(t, isDone(lease))
	clk.Set(deadline)
	select {
	case <-lease.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not lost at the safety deadline")
	}
	assert.Zero(t, distlock.RenewalRounds(lease), "no extension without renewal")
	assert.ErrorIs(t, lease.Err(), distlock.ErrLeaseLost)
}

// TestRenewalKeepsLeaseAlive: a 300ms lease held for 3s (10 TTLs) stays on
// a quorum the whole time, extended on schedule.
func TestRenewalKeepsLeaseAlive(t *testing.T) {
	servers, c := cluster(t, 3)
	m := newMutex(t, c, lockName(t), distlock.WithTTL(300*time.Millisecond))
	start := time.Now()
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)

	minAlive, samples := len(servers), 0
	for time.Since(start) < 3*time.Second {
		alive := 0
		for _, s := range servers {
			pttl, err := s.Do("PTTL", m.Name())
			require.NoError(t, err)
			if pttl.(int64) > 0 {
				alive++
			}
		}
		minAlive = min(minAlive, alive)
		samples++
		require.False(t, isDone(lease), "lease lost: %v", lease.Err())
		time.Sleep(2 * time.Millisecond) // the sampling period
	}
	held := time.Since(start)
	rounds := distlock.RenewalRounds(lease)
	require.NoError(t, lease.Unlock(context.Background()))

	assert.GreaterOrEqual(t, minAlive, 2, "a quorum held the key in each of %d samples", samples)
	schedule := int64(held / (100 * time.Millisecond))
	assert.LessOrEqual(t, rounds, schedule, "no more extensions than every ttl/3")
	assert.GreaterOrEqual(t, rounds, schedule-5, "extensions every ttl/3 (timers may fire a little late)")
	t.Logf("held %v: %d extension rounds, schedule %d; min alive %d of 3 over %d samples", held, rounds, schedule, minAlive, samples)
}

// TestLossSignalledBeforeExpiry: renewals are blackholed; Done closes at
// the safety deadline, before Until, while the keys still live on the
// masters, so no one else can hold the lock yet.
func TestLossSignalledBeforeExpiry(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(100*time.Millisecond))
	// A wide margin, so that the keys' remaining life at the loss is far
	// longer than the test's own scheduling delays on a loaded machine. The
	// mock-clock test shows the loss time is exact.
	const margin = 800 * time.Millisecond
	m := newMutex(t, c, lockName(t), distlock.WithTTL(2*time.Second), distlock.WithRenewalMargin(margin))
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	// Fast quorum may return before the third SET lands; let it land, so
	// the check below can demand that every master still holds the key.
	eventuallyHolders(t, servers, m.Name(), 3, "the acquire reached every master")
	for _, p := range proxies {
		p.SetBlackhole(true)
	}
	select {
	case <-lease.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("loss not signalled")
	}
	now := time.Now()
	alive := 0
	for _, s := range servers {
		pttl, err := s.Do("PTTL", m.Name())
		require.NoError(t, err)
		if pttl.(int64) > 0 {
			alive++
		}
	}
	until := lease.Until()
	assert.True(t, now.Before(until), "told before Until (%v before)", until.Sub(now))
	assert.LessOrEqual(t, now.Sub(until.Add(-margin)), 250*time.Millisecond, "told at the safety deadline Until-margin (timer latency allowed)")
	assert.Equal(t, 3, alive, "the keys still live when the holder is told")
	assert.ErrorIs(t, lease.Err(), distlock.ErrLeaseLost)
}

// TestStolenKeyDetected: the key is deleted on a quorum; the next renewal
// reports the loss, within one renewal interval.
func TestStolenKeyDetected(t *testing.T) {
	servers, c := cluster(t, 3)
	m := newMutex(t, c, lockName(t), distlock.WithTTL(600*time.Millisecond))
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return distlock.RenewalRounds(lease) >= 1 }, 5*time.Second, time.Millisecond)

	stolen := time.Now()
	for _, s := range servers[:2] {
		_, err := s.Do("SET", m.Name(), "thief")
		require.NoError(t, err)
	}
	select {
	case <-lease.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("theft not detected")
	}
	assert.Less(t, time.Since(stolen), 200*time.Millisecond+100*time.Millisecond, "within one renewal interval (200ms)")
	assert.ErrorIs(t, lease.Err(), distlock.ErrLeaseLost)
	assert.ErrorIs(t, lease.Err(), distlock.ErrNotHeld)
	assert.ErrorIs(t, lease.Unlock(context.Background()), distlock.ErrNotHeld)
	for _, s := range servers[:2] {
		v, err := s.Do("GET", m.Name())
		require.NoError(t, err)
		assert.Equal(t, []byte("thief"), v, "the thief's keys are untouched")
	}
}

// TestUnlockRacesRenewal: with an extension due at every instant, 10 000
// lock/unlock cycles: no extension round starts after Unlock returns, no key
// and no goroutine is left.
func TestUnlockRacesRenewal(t *testing.T) {
	servers, c := cluster(t, 3)
	const workers, cycles = 4, 2500
	type snap struct {
		lease  *distlock.Lease
		rounds int64
	}
	snaps := make([][]snap, workers)
	inParallel(t, workers, func(w int) error {
		m, err := c.NewMutex(lockName(t), distlock.WithTTL(time.Second), distlock.WithRenewalInterval(time.Nanosecond))
		if err != nil {
			return err
		}
		for range cycles {
			lease, err := m.TryLock(context.Background())
			if err != nil {
				return err
			}
			if err := lease.Unlock(context.Background()); err != nil {
				return err
			}
			snaps[w] = append(snaps[w], snap{lease, distlock.RenewalRounds(lease)})
		}
		return nil
	})
	require.NoError(t, c.Close())
	var raced int64
	for _, ss := range snaps {
		for _, s := range ss {
			require.Equal(t, s.rounds, distlock.RenewalRounds(s.lease), "an extension round started after Unlock returned")
			if s.rounds > 0 {
				raced++
			}
		}
	}
	for _, s := range servers {
		assert.Zero(t, dbsize(t, s), "no key left on %s", s.Addr())
	}
	assert.Positive(t, raced, "some Unlocks did race an extension")
	t.Logf("%d of %d cycles had an extension round before Unlock", raced, workers*cycles)
}

// TestMaxHold: the watchdog stops at the max hold, the loss has its own
// error, and another client gets the lock within one TTL after.
func TestMaxHold(t *testing.T) {
	servers, c := cluster(t, 3)
	const ttl = 300 * time.Millisecond
	name := lockName(t)
	lease, err := newMutex(t, c, name, distlock.WithTTL(ttl), distlock.WithMaxHold(time.Second)).TryLock(context.Background())
	require.NoError(t, err)
	start := time.Now()
	select {
	case <-lease.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("max hold not enforced")
	}
	lostAt := time.Now()
	assert.InDelta(t, float64(time.Second), float64(lostAt.Sub(start)), float64(100*time.Millisecond), "lost at the max hold")
	assert.ErrorIs(t, lease.Err(), distlock.ErrMaxHold)
	assert.ErrorIs(t, lease.Err(), distlock.ErrLeaseLost)

	other := newClient(t, distlocktest.Addrs(servers))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	next, err := newMutex(t, other, name).Lock(ctx)
	require.NoError(t, err)
	assert.Less(t, time.Since(lostAt), ttl+100*time.Millisecond, "the next holder gets it within one TTL")
	require.NoError(t, next.Unlock(context.Background()))
}

func TestDoCancelsFnWhenLeaseLost(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	err := c.Do(context.Background(), name, func(ctx context.Context) error {
		for _, s := range servers[:2] {
			if _, err := s.Do("SET", name, "thief"); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
			return nil
		}
	}, distlock.WithTTL(300*time.Millisecond))
	assert.ErrorIs(t, err, distlock.ErrLeaseLost, "Do reports the loss")
	assert.ErrorIs(t, err, context.Canceled, "and fn's own error")
}

func TestCloseEndsLeases(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	c, err := newUnfencedClient(distlocktest.Addrs(servers))
	require.NoError(t, err)
	var calls atomic.Int32
	m := newMutex(t, c, lockName(t), distlock.WithOnLost(func(error) { calls.Add(1) }))
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.Close())
	assert.True(t, isDone(lease), "Close ends every lease")
	assert.ErrorIs(t, lease.Err(), distlock.ErrLeaseLost)
	assert.ErrorIs(t, lease.Err(), distlock.ErrClosed)
	require.Eventually(t, func() bool { return calls.Load() == 1 }, waitTimeout, time.Millisecond, "OnLost ran")
	time.Sleep(20 * time.Millisecond)
	assert.Equal(t, int32(1), calls.Load(), "once")
}

func TestExtendByHandWithWatchdog(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	clk := clock.NewMock()
	c := newClient(t, distlocktest.Addrs(servers), distlock.WithClock(clk))
	events := renewEvents(c)
	m := newMutex(t, c, lockName(t), distlock.WithTTL(3*time.Second), distlock.WithDrift(0, 0), distlock.WithRenewalMargin(0))
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	t0 := clk.Now()
	require.Equal(t, t0.Add(time.Second), settle(t, events, clk.Now()))

	clk.Set(t0.Add(500 * time.Millisecond)) // before the first renewal
	require.NoError(t, lease.Extend(context.Background()))
	assert.Equal(t, t0.Add(3500*time.Millisecond), lease.Until())
	// The watchdog's next extension moved with it: it re-arms for
	// t0+1.5s and extends then.
	want := t0.Add(1500 * time.Millisecond)
	for at := settle(t, events, clk.Now()); !at.Equal(want); at = settle(t, events, clk.Now()) {
		require.True(t, at.Before(want), "armed for %v, want %v", at, want)
	}
	assert.Zero(t, distlock.RenewalRounds(lease))
	clk.Set(want)
	settle(t, events, want)
	assert.Equal(t, int64(1), distlock.RenewalRounds(lease))
	assert.Equal(t, want.Add(3*time.Second), lease.Until())
	require.NoError(t, lease.Unlock(context.Background()))
}
