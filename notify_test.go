package distlock_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

func slowRetry() backoff.BackOff { return backoff.NewConstantBackOff(5 * time.Second) }

// TestReleaseWakesWaiter: a waiter in another Client (another process) with
// a 5s backoff gets the lock right after the release, not after its backoff.
func TestReleaseWakesWaiter(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	holderC, waiterC := newClient(t, addrs), newClient(t, addrs)
	name := lockName(t)
	holder, err := newMutex(t, holderC, name).TryLock(context.Background())
	require.NoError(t, err)

	for round := range 3 {
		type acquired struct {
			lease *distlock.Lease
			at    time.Time
		}
		got := make(chan acquired, 1)
		waiter := newMutex(t, waiterC, name, distlock.WithRetry(slowRetry))
		go func() {
			lease, err := waiter.Lock(context.Background())
			if err != nil {
				close(got)
				return
			}
			got <- acquired{lease, time.Now()}
		}()
		waitSubscribed(t, servers, name)
		released := time.Now()
		require.NoError(t, holder.Unlock(context.Background()))
		select {
		case a, ok := <-got:
			require.True(t, ok, "Lock failed")
			assert.Less(t, a.at.Sub(released), 200*time.Millisecond, "round %d: handoff well under the 5s backoff", round)
			holder = a.lease // the waiter holds it for the next round
		case <-time.After(4 * time.Second):
			t.Fatalf("round %d: the waiter was not woken by the release", round)
		}
	}
	require.NoError(t, holder.Unlock(context.Background()))
}

// waitSubscribed waits until some client subscribes to name's release
// channel on every master.
func waitSubscribed(t *testing.T, servers []*distlocktest.Server, name string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, s := range servers {
			if numsub(t, s, distlock.KeyOf("release", name)) == 0 {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond, "the waiter subscribes to the release channel")
}

func numsub(t *testing.T, s *distlocktest.Server, channel string) int64 {
	v, err := s.Do("PUBSUB", "NUMSUB", channel)
	require.NoError(t, err)
	return v.([]any)[1].(int64)
}

// TestKilledHolderFreesWaiters: a holder that dies without Unlock frees its
// waiters within its TTL plus one backoff step.
func TestKilledHolderFreesWaiters(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	holderC, err := newUnfencedClient(addrs)
	require.NoError(t, err)
	waiterC := newClient(t, addrs)
	name := lockName(t)
	const ttl = 500 * time.Millisecond
	_, err = newMutex(t, holderC, name, distlock.WithTTL(ttl)).TryLock(context.Background())
	require.NoError(t, err)

	got := lockAsync(context.Background(), newMutex(t, waiterC, name))
	waitSubscribed(t, servers, name)
	killed := time.Now()
	require.NoError(t, holderC.Close()) // dies: no release, the keys stay until their TTL
	select {
	case err := <-got:
		require.NoError(t, err)
		assert.Less(t, time.Since(killed), ttl+distlock.DefaultRetryMax+100*time.Millisecond)
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter was stranded")
	}
}

// TestMasterRestartMidWait: the subscriber connection to a restarted master
// comes back, and a release announced there still wakes the waiter.
func TestMasterRestartMidWait(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	waiterC := newClient(t, addrs, distlock.WithMasterTimeout(testTimeout))
	name := lockName(t)
	for _, s := range servers {
		_, err := s.Do("SET", name, "someone-else", "PX", 60000)
		require.NoError(t, err)
	}
	got := lockAsync(context.Background(), newMutex(t, waiterC, name, distlock.WithRetry(slowRetry)))
	waitSubscribed(t, servers, name)
	require.NoError(t, servers[0].Restart())
	_, err := servers[0].Do("SET", name, "someone-else", "PX", 60000)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return numsub(t, servers[0], distlock.KeyOf("release", name)) == 1 },
		5*time.Second, time.Millisecond, "the subscriber reconnects to the restarted master")

	// The other holder releases; only the restarted master announces it.
	for _, s := range servers {
		_, err := s.Do("DEL", name)
		require.NoError(t, err)
	}
	released := time.Now()
	_, err = servers[0].Do("PUBLISH", distlock.KeyOf("release", name), "")
	require.NoError(t, err)
	select {
	case err := <-got:
		require.NoError(t, err)
		assert.Less(t, time.Since(released), time.Second, "woken by the announcement, not the 5s backoff")
	case <-time.After(4 * time.Second):
		t.Fatal("the waiter was stranded")
	}
}

func TestNoSubscriptionOutlivesClose(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	holderC := newClient(t, addrs)
	c, err := newUnfencedClient(addrs)
	require.NoError(t, err)
	name := lockName(t)
	holder, err := newMutex(t, holderC, name).TryLock(context.Background())
	require.NoError(t, err)
	defer holder.Unlock(context.Background())

	ctx, cancel := context.WithCancel(context.Background())
	done := lockAsync(ctx, newMutex(t, c, name))
	waitSubscribed(t, servers, name)
	require.NoError(t, c.Close())
	assert.ErrorIs(t, recv(t, done, "the waiting Lock"), distlock.ErrClosed, "a waiting Lock ends with ErrClosed")
	cancel()
	for _, s := range servers {
		assert.Zero(t, numsub(t, s, distlock.KeyOf("release", name)), "no subscription left on %s", s.Addr())
	}
}

// TestLocalFIFO: 8 goroutines of one Client take turns on one lock; only
// the head of the Client's queue contends, so each acquisition costs few
// attempts on the masters.
func TestLocalFIFO(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	const workers, rounds = 8, 25
	for _, s := range servers {
		_, err := s.Do("CONFIG", "RESETSTAT")
		require.NoError(t, err)
	}
	inParallel(t, workers, func(int) error {
		m, err := c.NewMutex(name)
		if err != nil {
			return err
		}
		for range rounds {
			lease, err := m.Lock(context.Background())
			if err != nil {
				return err
			}
			time.Sleep(time.Millisecond) // the critical section
			if err := lease.Unlock(context.Background()); err != nil {
				return err
			}
		}
		return nil
	})
	// Each acquire attempt runs SET NX once on each master it reaches.
	info, err := servers[0].Do("INFO", "commandstats")
	require.NoError(t, err)
	var sets int
	for _, line := range strings.Split(string(info.([]byte)), "\n") {
		if _, err := fmt.Sscanf(line, "cmdstat_set:calls=%d", &sets); err == nil {
			break
		}
	}
	perAcquisition := float64(sets) / (workers * rounds)
	t.Logf("%.2f acquire attempts per acquisition (%d workers)", perAcquisition, workers)
	assert.Less(t, perAcquisition, 3.0, "only the head of the queue contends")
}

// TestHeadBehindLocalHolderWaits: a waiter that reaches the head of the
// Client's queue while the waiter before it holds the lock sends no round
// until that holder releases (the Client's clock is a mock that never
// moves, so no fallback delay ends either); the release hands it the lock.
func TestHeadBehindLocalHolderWaits(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	var rounds atomic.Int64
	c := newClient(t, distlocktest.Addrs(servers), distlock.WithClock(clock.NewMock()),
		distlock.WithObserver(func(e distlock.Event) {
			if e.Kind == distlock.EventAcquire {
				rounds.Add(1)
			}
		}))
	ctx := context.Background()
	m := newMutex(t, c, lockName(t))
	first, err := m.Lock(ctx)
	require.NoError(t, err)
	type result struct {
		lease *distlock.Lease
		err   error
	}
	second, third := make(chan result, 1), make(chan result, 1)
	go func() { l, err := m.Lock(ctx); second <- result{l, err} }()
	require.Eventually(t, func() bool { return c.Stats().Waiting == 1 }, 5*time.Second, time.Millisecond)
	go func() { l, err := m.Lock(ctx); third <- result{l, err} }()
	require.Eventually(t, func() bool { return c.Stats().Waiting == 2 }, 5*time.Second, time.Millisecond)

	require.NoError(t, first.Unlock(ctx))
	r := recv(t, second, "the second Lock")
	require.NoError(t, r.err)
	silent(t, third, 300*time.Millisecond, "the third Lock while the second holds")
	// The first Lock: one round. The second: refused twice (the first
	// round, and the one right after it subscribed), then one when the
	// first released. The third: none yet. Events are delivered on the
	// observer's goroutine: wait for them (bounded), then a moment more.
	require.Eventually(t, func() bool { return rounds.Load() >= 4 }, 5*time.Second, time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, int64(4), rounds.Load(), "no acquire round while the local holder holds")

	require.NoError(t, r.lease.Unlock(ctx))
	r = recv(t, third, "the third Lock")
	require.NoError(t, r.err)
	require.NoError(t, r.lease.Unlock(ctx))
}

// TestReleaseChannelLingers: a lock's release channel stays subscribed for
// about a second after its last waiter left, then is unsubscribed.
func TestReleaseChannelLingers(t *testing.T) {
	servers, c := cluster(t, 1)
	holder := newClient(t, distlocktest.Addrs(servers))
	name := lockName(t)
	lease, err := newMutex(t, holder, name).Lock(context.Background())
	require.NoError(t, err)
	got := lockAsync(context.Background(), newMutex(t, c, name))
	waitSubscribed(t, servers, name)
	require.NoError(t, lease.Unlock(context.Background()))
	require.NoError(t, recv(t, got, "the waiter"))
	left := time.Now()
	channel := distlock.KeyOf("release", name)
	assert.Equal(t, int64(1), numsub(t, servers[0], channel), "still subscribed just after the waiter left")
	require.Eventually(t, func() bool { return numsub(t, servers[0], channel) == 0 }, 5*time.Second, 10*time.Millisecond,
		"unsubscribed after the linger")
	assert.GreaterOrEqual(t, time.Since(left), 900*time.Millisecond, "not before about a second")
	assert.Eventually(t, func() bool { return distlock.NotifierSize(c) == 0 }, 2*time.Second, 10*time.Millisecond)
}
