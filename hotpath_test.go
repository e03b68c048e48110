package distlock_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// commandCalls returns, per command, how many times s ran it since its
// last CONFIG RESETSTAT (INFO commandstats).
func commandCalls(t testing.TB, s *distlocktest.Server) map[string]int64 {
	t.Helper()
	v, err := s.Do("INFO", "commandstats")
	require.NoError(t, err)
	calls := map[string]int64{}
	for _, line := range strings.Split(string(v.([]byte)), "\r\n") {
		name, stats, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		var n int64
		_, _ = fmt.Sscanf(stats, "calls=%d", &n)
		calls[name] = n
	}
	return calls
}

// warmUp connects c to every master and waits until each has loaded the
// scripts: Inspect waits for every master's answer, which comes after the
// script loads sent first on its connection.
func warmUp(t *testing.T, c *distlock.Client) {
	t.Helper()
	ctx := context.Background()
	name := lockName(t)
	lease, err := newMutex(t, c, name).Lock(ctx)
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(ctx))
	_, err = c.Inspect(ctx, name)
	require.NoError(t, err)
}

// TestUncontendedCycleCommands: once the masters have the scripts, an
// uncontended Lock and Unlock cost each master one plain SET NX PX and one
// script call (the release), and nothing touches the fencing counter; a
// round refused because the lock is held is followed by acquire.lua rounds,
// which tell how long the holder keeps it.
func TestUncontendedCycleCommands(t *testing.T) {
	servers, c := cluster(t, 3)
	ctx := context.Background()
	warmUp(t, c)
	for _, s := range servers {
		_, err := s.Do("CONFIG", "RESETSTAT")
		require.NoError(t, err)
	}
	const cycles = 20
	var names []string
	for range cycles {
		name := lockName(t)
		names = append(names, name)
		lease, err := newMutex(t, c, name).Lock(ctx)
		require.NoError(t, err)
		require.NoError(t, lease.Unlock(ctx))
		lease, err = newMutex(t, c, name).TryLock(ctx)
		require.NoError(t, err)
		require.NoError(t, lease.Unlock(ctx))
	}
	for i, s := range servers {
		calls := commandCalls(t, s)
		assert.Equal(t, int64(2*cycles), calls["set"], "master %d: one SET per acquisition", i)
		assert.Equal(t, int64(2*cycles), calls["evalsha"], "master %d: one script call per release", i)
		assert.Zero(t, calls["eval"], "master %d", i)
		for _, name := range names {
			n, err := s.Do("EXISTS", "__distlock:fence:{"+name+"}")
			require.NoError(t, err)
			assert.Equal(t, int64(0), n, "master %d: no fencing counter without Token", i)
		}
	}

	// Contended: the first round is refused, the next run acquire.lua, and
	// Lock waits no longer than the holder's TTL even though nobody
	// announces the end (the holder's keys expire).
	name := lockName(t)
	holder, err := newMutex(t, c, name, distlock.WithTTL(500*time.Millisecond), distlock.WithoutRenewal()).Lock(ctx)
	require.NoError(t, err)
	_ = holder
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lease, err := newMutex(t, c, name, distlock.WithRetry(func() backoff.BackOff { return backoff.NewConstantBackOff(time.Minute) })).Lock(lctx)
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 5*time.Second, "the wait was bounded by the holder's TTL, not the one-minute backoff")
	require.NoError(t, lease.Unlock(ctx))
	assert.Positive(t, commandCalls(t, servers[0])["evalsha"]-int64(2*cycles), "acquire.lua ran after the refusal")
}

// TestTryLockOnKeyOfAnotherType: the fast first round answers a key that
// is no lock as taken; Lock, whose next rounds run acquire.lua, fails with
// WRONGTYPE as a permanent failure (see TestPermanentFailures).
func TestTryLockOnKeyOfAnotherType(t *testing.T) {
	servers, c := cluster(t, 3)
	ctx := context.Background()
	warmUp(t, c)
	name := lockName(t)
	for _, s := range servers {
		_, err := s.Do("LPUSH", name, "not a lock")
		require.NoError(t, err)
	}
	m := newMutex(t, c, name)
	_, err := m.TryLock(ctx)
	assert.ErrorIs(t, err, distlock.ErrLocked)
	_, err = m.Lock(ctx)
	assert.ErrorIs(t, err, distlock.ErrPermanent)
	assert.ErrorContains(t, err, "WRONGTYPE")
}

// TestAllocationsPerCycle: an uncontended Lock and Unlock allocate at most
// 6 times with a Mutex reused, 8 with a Mutex made per call (the rounds are
// recycled, the arguments boxed once). The race detector allocates on its
// own; `make test` runs this test without it too.
func TestAllocationsPerCycle(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{1, 3, 5} {
		_, c := cluster(t, n)
		name := lockName(t)
		reused := newMutex(t, c, name)
		withReused := func() {
			lease, err := reused.Lock(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if err := lease.Unlock(ctx); err != nil {
				t.Error(err)
			}
		}
		perCall := func() {
			m, err := c.NewMutex(name)
			if err != nil {
				t.Error(err)
				return
			}
			lease, err := m.Lock(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if err := lease.Unlock(ctx); err != nil {
				t.Error(err)
			}
		}
		warmUp(t, c)
		withReused()
		// The least of three measures (see TestObserverAllocs).
		a, b := testing.AllocsPerRun(300, withReused), testing.AllocsPerRun(300, perCall)
		for range 2 {
			a, b = min(a, testing.AllocsPerRun(300, withReused)), min(b, testing.AllocsPerRun(300, perCall))
		}
		t.Logf("%d masters: %.1f allocations per cycle with a reused Mutex, %.1f with one per call (race detector: %v)", n, a, b, raceEnabled)
		if !raceEnabled {
			assert.LessOrEqual(t, a, 6.0, "%d masters, reused Mutex", n)
			assert.LessOrEqual(t, b, 8.0, "%d masters, Mutex per call", n)
		}
	}
}

// TestKeptReleaseOutlivesRecycledRounds: a release kept for a master that
// is down keeps its own arguments: the rounds made while the master is down
// reuse the memory of the round that sent it, yet when the master answers
// again the kept release deletes its own key, and no other.
func TestKeptReleaseOutlivesRecycledRounds(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(testTimeout))
	ctx := context.Background()
	name := lockName(t)
	lease, err := newMutex(t, c, name, distlock.WithTTL(time.Minute)).TryLock(ctx)
	require.NoError(t, err)
	eventuallyHolders(t, servers, name, 3, "acquired everywhere")
	proxies[0].SetBlackhole(true)
	require.NoError(t, lease.Unlock(ctx), "released on a quorum")
	require.Eventually(t, func() bool { return c.Stats().Masters[0].Deferred > 0 }, 5*testTimeout, 10*time.Millisecond,
		"master 0 is suspected down and keeps the release")
	// Many rounds while master 0 is down: their releases are kept too.
	var others []string
	for range 50 {
		other := lockName(t)
		others = append(others, other)
		l, err := newMutex(t, c, other, distlock.WithTTL(time.Minute)).TryLock(ctx)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))
	}
	// A lease held by someone else on master 0 must survive the re-sends.
	live := lockName(t)
	_, err = servers[0].Do("SET", live, "another-owner", "PX", 60000)
	require.NoError(t, err)
	proxies[0].SetBlackhole(false)
	require.Eventually(t, func() bool { return c.Stats().Masters[0].Deferred == 0 && holders(t, servers[:1], name) == 0 },
		10*time.Second, 10*time.Millisecond, "the kept release deleted its key on master 0")
	for _, other := range others {
		assert.Equal(t, 0, holders(t, servers, other), "%s left behind", other)
	}
	v, err := servers[0].Do("GET", live)
	require.NoError(t, err)
	assert.Equal(t, []byte("another-owner"), v, "another owner's key untouched")
}

// TestFastPathWithAMasterDown: a master suspected down does not keep the
// others off plain SET NX PX: it answers no round anyway, and loads the
// scripts on its new connection when it is back.
func TestFastPathWithAMasterDown(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(300*time.Millisecond))
	ctx := context.Background()
	require.NoError(t, servers[2].Pause())
	t.Cleanup(func() { _ = servers[2].Resume() })
	require.Eventually(t, func() bool {
		lease, err := newMutex(t, c, lockName(t)).Lock(ctx)
		if err == nil {
			_ = lease.Unlock(ctx)
		}
		return c.Stats().Up == 2
	}, 10*time.Second, 50*time.Millisecond, "master 2 is suspected down")
	for _, s := range servers[:2] {
		_, err := s.Do("CONFIG", "RESETSTAT")
		require.NoError(t, err)
	}
	const cycles = 10
	for range cycles {
		lease, err := newMutex(t, c, lockName(t)).Lock(ctx)
		require.NoError(t, err)
		require.NoError(t, lease.Unlock(ctx))
	}
	for i, s := range servers[:2] {
		calls := commandCalls(t, s)
		assert.Equal(t, int64(cycles), calls["set"], "master %d: one SET per acquisition", i)
		assert.Equal(t, int64(cycles), calls["evalsha"], "master %d: one script call per release", i)
	}
}

// TestUnlockSkipsMastersWithoutTheKey: a lease acquired while a master was
// down is released only where its acquire was sent: the master, back up,
// gets no release and keeps none, and Unlock succeeds.
func TestUnlockSkipsMastersWithoutTheKey(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(300*time.Millisecond))
	ctx := context.Background()
	require.NoError(t, servers[2].Pause())
	require.Eventually(t, func() bool {
		lease, err := newMutex(t, c, lockName(t)).TryLock(ctx)
		if err == nil {
			_ = lease.Unlock(ctx)
		}
		return c.Stats().Up == 2
	}, 10*time.Second, 50*time.Millisecond, "master 2 is suspected down")
	name := lockName(t)
	// No renewal: an extension would find the key missing on master 2 and
	// set it there (then the release must go there too).
	lease, err := newMutex(t, c, name, distlock.WithoutRenewal()).TryLock(ctx)
	require.NoError(t, err)
	require.NoError(t, servers[2].Resume())
	require.Eventually(t, func() bool { return c.Stats().Up == 3 && c.Stats().Masters[2].Deferred == 0 }, 10*time.Second, 10*time.Millisecond,
		"master 2 answers again, and got the releases kept for it")
	require.Eventually(t, func() bool {
		_, err := servers[2].Do("CONFIG", "RESETSTAT")
		require.NoError(t, err)
		time.Sleep(100 * time.Millisecond)
		return commandCalls(t, servers[2])["evalsha"] == 0
	}, 10*time.Second, time.Millisecond, "master 2 ran the kept releases")
	require.NoError(t, lease.Unlock(ctx))
	assert.Zero(t, commandCalls(t, servers[2])["evalsha"], "no release sent to master 2")
	assert.Zero(t, c.Stats().Masters[2].Deferred)
	assert.Equal(t, 0, holders(t, servers, name))
}
