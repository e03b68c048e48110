package distlock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
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

// TestQuorum: with k of N masters killed or blackholed, a lock is acquired
// iff N-k >= N/2+1; a failure names each failing master.
func TestQuorum(t *testing.T) {
	for _, n := range []int{1, 3, 5} {
		for k := 0; k <= n; k++ {
			for _, fault := range []string{"killed", "blackholed"} {
				if k == 0 && fault == "blackholed" {
					continue
				}
				t.Run(fmt.Sprintf("N=%d/k=%d/%s", n, k, fault), func(t *testing.T) {
					t.Parallel()
					servers, proxies, c := proxied(t, n, distlock.WithMasterTimeout(testTimeout))
					failing := map[string]bool{}
					for i := range k {
						if fault == "killed" {
							require.NoError(t, servers[i].Kill())
						} else {
							proxies[i].SetBlackhole(true)
						}
						failing[proxies[i].Addr()] = true
					}
					name := lockName(t)
					lease, err := newMutex(t, c, name, distlock.WithTTL(10*time.Second)).TryLock(context.Background())
					if n-k >= n/2+1 {
						require.NoError(t, err)
						assert.GreaterOrEqual(t, holders(t, servers[k:], name), n/2+1, "the lock is set on a quorum")
						require.NoError(t, lease.Unlock(context.Background()))
						require.NoError(t, c.Close()) // waits for every queued command
						assert.Equal(t, 0, holders(t, servers[k:], name), "released on every live master")
						return
					}
					require.Error(t, err)
					assert.ErrorIs(t, err, distlock.ErrNotAcquired)
					assert.NotErrorIs(t, err, distlock.ErrLocked)
					var qe *distlock.QuorumError
					require.ErrorAs(t, err, &qe)
					assert.Equal(t, "acquire", qe.Op)
					assert.LessOrEqual(t, qe.Agreed, n-k)
					assert.Equal(t, n/2+1, qe.Needed)
					assert.Equal(t, n, qe.Masters)
					// Every master that did not agree is named: with its error,
					// or as not having answered when the round was decided
					// (fast quorum does not wait for the rest).
					named := map[string]error{}
					for _, me := range qe.Errors {
						named[me.Addr] = me.Err
					}
					assert.Len(t, named, n-qe.Agreed)
					for addr := range failing {
						require.Contains(t, named, addr, "the error names each failing master")
					}
					for addr, err := range named {
						if !failing[addr] {
							assert.ErrorContains(t, err, "no answer before the round was decided", "a healthy master is named only as not having answered yet")
						}
					}
					// Masters that had not answered get their release queued
					// behind their acquire; Close waits for both.
					require.NoError(t, c.Close())
					assert.Equal(t, 0, holders(t, servers[k:], name), "a failed round leaves no key")
				})
			}
		}
	}
}

func TestHeldElsewhereIsErrLocked(t *testing.T) {
	servers, c := cluster(t, 3)
	m := newMutex(t, c, lockName(t))
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	defer lease.Unlock(context.Background())

	_, err = m.TryLock(context.Background())
	assert.ErrorIs(t, err, distlock.ErrLocked)
	assert.ErrorIs(t, err, distlock.ErrNotAcquired)
	var qe *distlock.QuorumError
	require.ErrorAs(t, err, &qe)
	require.Len(t, qe.Errors, 3, "every master that did not agree is named")
	locked := 0
	for _, me := range qe.Errors {
		if errors.Is(me, distlock.ErrLocked) {
			locked++
		}
	}
	assert.GreaterOrEqual(t, locked, 2, "a quorum answered that another owner holds it")
	eventuallyHolders(t, servers, m.Name(), 3, "the holder's keys are untouched")
}

// TestMutualExclusion: 16 goroutines increment a plain int under the lock;
// no update is lost and no two critical sections overlap.
func TestMutualExclusion(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	const workers, cycles = 16, 40
	var (
		counter int // deliberately not atomic: the lock is what protects it
		inside  atomic.Int32
		overlap atomic.Int32
	)
	inParallel(t, workers, func(int) error {
		m, err := c.NewMutex(name, distlock.WithTTL(5*time.Second))
		if err != nil {
			return err
		}
		for range cycles {
			lease, err := m.Lock(context.Background())
			if err != nil {
				return err
			}
			if inside.Add(1) != 1 {
				overlap.Add(1)
			}
			v := counter
			time.Sleep(50 * time.Microsecond) // widen the race window
			counter = v + 1
			inside.Add(-1)
			if err := lease.Unlock(context.Background()); err != nil {
				return err
			}
		}
		return nil
	})
	assert.Equal(t, workers*cycles, counter)
	assert.Zero(t, overlap.Load())
	require.NoError(t, c.Close()) // sends what is still queued
	for _, s := range servers {
		assert.Zero(t, dbsize(t, s))
	}
}

// steppingClock is a mock clock whose first Now call advances it by step,
// so the time an acquire round takes is exactly step (a round reads the
// clock at its start and at its end). Later calls (the watchdog's) do not
// move it: the lease cannot run out before the test looks at it.
type steppingClock struct {
	*clock.Mock
	step  time.Duration
	mu    sync.Mutex
	calls int
}

func (s *steppingClock) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Mock.Now()
	if s.calls < 1 {
		s.calls++
		s.Mock.Set(now.Add(s.step))
	}
	return now
}

// TestValidityExact: Until is t0 + ttl - elapsed... measured on the mock
// clock, validity is exactly ttl - elapsed - drift; a round whose elapsed
// time eats the validity fails and leaves no key on any master.
func TestValidityExact(t *testing.T) {
	tests := map[string]struct {
		ttl      time.Duration
		factor   float64
		constant time.Duration
		elapsed  time.Duration
		wantOK   bool
	}{
		"default drift":          {ttl: 10 * time.Second, factor: 0.01, constant: 2 * time.Millisecond, elapsed: 5 * time.Millisecond, wantOK: true},
		"no drift":               {ttl: time.Second, factor: 0, constant: 0, elapsed: 0, wantOK: true},
		"large factor":           {ttl: time.Second, factor: 0.5, constant: 0, elapsed: 100 * time.Millisecond, wantOK: true},
		"constant only":          {ttl: 100 * time.Millisecond, factor: 0, constant: 30 * time.Millisecond, elapsed: 69 * time.Millisecond, wantOK: true},
		"one tick of validity":   {ttl: time.Second, factor: 0.01, constant: 2 * time.Millisecond, elapsed: 988*time.Millisecond - 1, wantOK: true},
		"validity exactly zero":  {ttl: time.Second, factor: 0.01, constant: 2 * time.Millisecond, elapsed: 988 * time.Millisecond, wantOK: false},
		"elapsed eats validity":  {ttl: 100 * time.Millisecond, factor: 0.01, constant: 2 * time.Millisecond, elapsed: 200 * time.Millisecond, wantOK: false},
		"drift eats the rest":    {ttl: time.Second, factor: 0.5, constant: 0, elapsed: 500 * time.Millisecond, wantOK: false},
		"constant eats the rest": {ttl: 100 * time.Millisecond, factor: 0, constant: 30 * time.Millisecond, elapsed: 70 * time.Millisecond, wantOK: false},
	}
	servers := distlocktest.NewServers(t, 3)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			clk := &steppingClock{Mock: clock.NewMock(), step: tc.elapsed}
			t0 := clk.Mock.Now()
			c := newClient(t, distlocktest.Addrs(servers), distlock.WithClock(clk))
			m := newMutex(t, c, lockName(t), distlock.WithTTL(tc.ttl), distlock.WithDrift(tc.factor, tc.constant),
				distlock.WithoutRenewal(), distlock.WithRenewalMargin(0))
			lease, err := m.TryLock(context.Background())
			if !tc.wantOK {
				require.ErrorIs(t, err, distlock.ErrNotAcquired)
				assert.ErrorIs(t, err, distlock.ErrNoValidity)
				require.NoError(t, c.Close()) // waits for releases queued behind acquires
				assert.Equal(t, 0, holders(t, servers, m.Name()), "no key left on any master")
				return
			}
			require.NoError(t, err)
			drift := time.Duration(float64(tc.ttl)*tc.factor) + tc.constant
			assert.Equal(t, t0.Add(tc.ttl-drift), lease.Until(), "until = t0 + ttl - drift")
			assert.Equal(t, tc.ttl-tc.elapsed-drift, lease.Until().Sub(t0.Add(tc.elapsed)), "validity = ttl - elapsed - drift")
			require.NoError(t, lease.Unlock(context.Background()))
		})
	}
}

// TestPausedMasterDoesNotDelayLock: with fast quorum, a SIGSTOPped master
// among three costs nothing; with two paused, a round fails after the master
// timeout, not later.
func TestPausedMasterDoesNotDelayLock(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(2*time.Second))
	require.NoError(t, servers[2].Pause())
	defer servers[2].Resume()
	m := newMutex(t, c, lockName(t))

	for range 5 {
		start := time.Now()
		lease, err := m.TryLock(context.Background())
		require.NoError(t, err)
		took := time.Since(start)
		assert.Less(t, took, 500*time.Millisecond, "a paused master must not be waited for (master timeout 2s)")
		require.NoError(t, lease.Unlock(context.Background()))
	}
}

// TestSlowMasterDoesNotDelayLock: a proxy adds 2s of latency to one master
// of three; with fast quorum a round does not wait for it.
func TestSlowMasterDoesNotDelayLock(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(5*time.Second))
	proxies[0].SetLatency(2 * time.Second)
	m := newMutex(t, c, lockName(t))
	start := time.Now()
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 500*time.Millisecond, "the slow master is not waited for")
	require.NoError(t, lease.Unlock(context.Background()))
	assert.Less(t, time.Since(start), 500*time.Millisecond, "nor by Unlock")
	// Its acquire and release arrive 2s late, in that order: no key is left.
	proxies[0].SetLatency(0)
	require.NoError(t, c.Close())
	assert.Equal(t, 0, holders(t, servers, m.Name()))
}

func TestStalledMasterBoundedByMasterTimeout(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(300*time.Millisecond))
	require.NoError(t, servers[1].Pause())
	require.NoError(t, servers[2].Pause())
	defer servers[1].Resume()
	defer servers[2].Resume()
	m := newMutex(t, c, lockName(t))
	start := time.Now()
	_, err := m.TryLock(context.Background())
	took := time.Since(start)
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "the paused masters time out")
	assert.GreaterOrEqual(t, took, 300*time.Millisecond)
	assert.Less(t, took, 2*time.Second)

	// Suspected masters now fail fast instead of being waited for again.
	start = time.Now()
	_, err = m.TryLock(context.Background())
	assert.ErrorIs(t, err, distlock.ErrMasterDown)
	assert.Less(t, time.Since(start), 150*time.Millisecond)
}

// TestDroppedReplyLeavesNoKey: the acquire ran on two masters but their
// replies were lost; the round fails, and the keys it may have set are
// released once those masters answer again, long before the TTL.
func TestDroppedReplyLeavesNoKey(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(testTimeout))
	warmUp(t, c) // connected and checked: the replies dropped are the acquire's
	proxies[1].SetDropReplies(true)
	proxies[2].SetDropReplies(true)
	m := newMutex(t, c, lockName(t), distlock.WithTTL(time.Minute))

	_, err := m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrNotAcquired)
	assert.Equal(t, 0, holders(t, servers[:1], m.Name()), "released at once on the master that answered")
	assert.Equal(t, 2, holders(t, servers[1:], m.Name()), "the SETs whose replies were dropped did run")

	proxies[1].SetDropReplies(false)
	proxies[2].SetDropReplies(false)
	require.Eventually(t, func() bool { return holders(t, servers, m.Name()) == 0 },
		10*time.Second, 10*time.Millisecond, "the release is re-sent once the masters answer (TTL is a minute)")
}

// TestNoLeftoverKeys: many contended lock/unlock cycles leave no key.
func TestNoLeftoverKeys(t *testing.T) {
	const goroutines, cycles = 32, 2000
	run := func(t *testing.T, c *distlock.Client, during func(done int64)) {
		names := []string{lockName(t), lockName(t), lockName(t), lockName(t)}
		var done atomic.Int64
		inParallel(t, goroutines, func(g int) error {
			m, err := c.NewMutex(names[g%len(names)], distlock.WithTTL(2*time.Second))
			if err != nil {
				return err
			}
			for done.Add(1) <= cycles {
				during(done.Load())
				lease, err := m.Lock(context.Background())
				if err != nil {
					return err
				}
				_ = lease.Unlock(context.Background())
			}
			return nil
		})
		require.NoError(t, c.Close())
	}

	t.Run("healthy", func(t *testing.T) {
		servers, c := cluster(t, 3)
		run(t, c, func(int64) {})
		for _, s := range servers {
			assert.Zero(t, dbsize(t, s), "no lock key left on %s", s.Addr())
		}
	})

	t.Run("one master paused mid-run", func(t *testing.T) {
		servers, c := cluster(t, 3, distlock.WithMasterTimeout(testTimeout))
		var pause, resume sync.Once
		run(t, c, func(n int64) {
			if n >= cycles/4 {
				pause.Do(func() { require.NoError(t, servers[2].Pause()) })
			}
			if n >= 3*cycles/4 {
				resume.Do(func() { require.NoError(t, servers[2].Resume()) })
			}
		})
		for _, s := range servers[:2] {
			assert.Zero(t, dbsize(t, s), "no lock key left on %s", s.Addr())
		}
		// Keys the paused master took while its replies were lost expire
		// with their TTL (2s).
		require.Eventually(t, func() bool { return dbsize(t, servers[2]) == 0 }, 5*time.Second, 20*time.Millisecond)
	})
}

// TestUnlockNeverDeletesAnotherOwnersKey: A's keys expire, B locks, A's
// Unlock reports ErrNotHeld and B still holds the lock.
func TestUnlockNeverDeletesAnotherOwnersKey(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	a, err := newMutex(t, c, name, distlock.WithTTL(100*time.Millisecond), distlock.WithoutRenewal()).TryLock(context.Background())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return holders(t, servers, name) == 0 }, 5*time.Second, 5*time.Millisecond, "A's keys expire")

	cb := newClient(t, distlocktest.Addrs(servers))
	b, err := newMutex(t, cb, name, distlock.WithTTL(time.Minute)).TryLock(context.Background())
	require.NoError(t, err)

	assert.ErrorIs(t, a.Unlock(context.Background()), distlock.ErrNotHeld)
	require.NoError(t, c.Close()) // every command of A's has run
	eventuallyHolders(t, servers, name, 3, "B's keys are untouched")
	assert.ErrorIs(t, a.Extend(context.Background()), distlock.ErrNotHeld)
	require.NoError(t, b.Extend(context.Background()), "B still holds the lock")
	require.NoError(t, b.Unlock(context.Background()))
	eventuallyHolders(t, servers, name, 0, "B's Unlock deletes its keys")
}

func TestUnlockTwiceAndNilLease(t *testing.T) {
	_, c := cluster(t, 3)
	lease, err := newMutex(t, c, lockName(t)).TryLock(context.Background())
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(context.Background()))
	assert.ErrorIs(t, lease.Unlock(context.Background()), distlock.ErrNotHeld)
	assert.ErrorIs(t, lease.Extend(context.Background()), distlock.ErrNotHeld)

	var nilLease *distlock.Lease
	assert.ErrorIs(t, nilLease.Unlock(context.Background()), distlock.ErrNotHeld)
	assert.ErrorIs(t, nilLease.Extend(context.Background()), distlock.ErrNotHeld)
}

func TestLeaseSignalsEndOnUnlock(t *testing.T) {
	_, c := cluster(t, 3)
	lease, err := newMutex(t, c, lockName(t)).TryLock(context.Background())
	require.NoError(t, err)
	ctx := lease.Context()
	select {
	case <-lease.Done():
		t.Fatal("Done closed while held")
	default:
	}
	require.NoError(t, lease.Unlock(context.Background()))
	recv(t, lease.Done(), "the lease ends")
	<-ctx.Done()
	assert.NoError(t, lease.Err(), "a clean Unlock is not an error")
	assert.ErrorIs(t, context.Cause(ctx), context.Canceled)
	<-lease.Context().Done()
}

func TestExtend(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	clk := clock.NewMock()
	c := newClient(t, distlocktest.Addrs(servers), distlock.WithClock(clk))
	m := newMutex(t, c, lockName(t), distlock.WithTTL(time.Second), distlock.WithDrift(0, 0))
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	assert.Equal(t, clk.Now().Add(time.Second), lease.Until())

	clk.Add(400 * time.Millisecond)
	_, err = servers[0].Do("PEXPIRE", m.Name(), 50) // Extend must reset this
	require.NoError(t, err)
	require.NoError(t, lease.Extend(context.Background()))
	assert.Equal(t, clk.Now().Add(time.Second), lease.Until(), "Until moves to the start of the extend round plus ttl")
	for _, s := range servers {
		require.Eventually(t, func() bool {
			pttl, err := s.Do("PTTL", m.Name())
			return err == nil && pttl.(int64) > 500
		}, 2*time.Second, 2*time.Millisecond, "TTL reset on %s", s.Addr())
	}

	// A quorum of masters lost the key: Extend fails for good, the lease is lost.
	for _, s := range servers[:2] {
		_, err := s.Do("DEL", m.Name())
		require.NoError(t, err)
	}
	err = lease.Extend(context.Background())
	assert.ErrorIs(t, err, distlock.ErrNotHeld)
	recv(t, lease.Done(), "the lease ends")
	assert.ErrorIs(t, lease.Err(), distlock.ErrLeaseLost)
	assert.ErrorIs(t, context.Cause(lease.Context()), distlock.ErrLeaseLost)
	assert.ErrorIs(t, lease.Unlock(context.Background()), distlock.ErrNotHeld, "a lost lease is not held")
	eventuallyHolders(t, servers, m.Name(), 0, "Unlock of a lost lease still cleans its keys")
}

// TestCancelWhileMasterStalls: a deadline while the quorum depends on a
// stalled master returns at the deadline; the key left on the stalled
// master is released when it answers.
func TestCancelWhileMasterStalls(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(5*time.Second))
	require.NoError(t, servers[1].Pause())
	require.NoError(t, servers[2].Pause())
	m := newMutex(t, c, lockName(t), distlock.WithTTL(time.Minute))

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := m.Lock(ctx)
	took := time.Since(start)
	assert.ErrorIs(t, err, distlock.ErrNotAcquired)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, took, 200*time.Millisecond+50*time.Millisecond, "returns within a few ms of the deadline")
	assert.Equal(t, 0, holders(t, servers[:1], m.Name()))

	require.NoError(t, servers[1].Resume())
	require.NoError(t, servers[2].Resume())
	require.Eventually(t, func() bool { return holders(t, servers, m.Name()) == 0 },
		10*time.Second, 10*time.Millisecond, "the queued release runs after the acquire (TTL is a minute)")
}

func TestLockWaitsForRelease(t *testing.T) {
	_, c := cluster(t, 3)
	name := lockName(t)
	holder, err := newMutex(t, c, name).TryLock(context.Background())
	require.NoError(t, err)

	got := lockAsync(context.Background(), newMutex(t, c, name))
	silent(t, got, 100*time.Millisecond, "Lock returned while the lock was held")
	require.NoError(t, holder.Unlock(context.Background()))
	require.NoError(t, recv(t, got, "Lock after the release"))
}

func TestLockCancelledWhileHeldMatchesBoth(t *testing.T) {
	_, c := cluster(t, 3)
	name := lockName(t)
	holder, err := newMutex(t, c, name).TryLock(context.Background())
	require.NoError(t, err)
	defer holder.Unlock(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = newMutex(t, c, name).Lock(ctx)
	assert.ErrorIs(t, err, distlock.ErrNotAcquired)
	assert.ErrorIs(t, err, distlock.ErrLocked)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestLockRetryPolicyStop(t *testing.T) {
	_, c := cluster(t, 3)
	name := lockName(t)
	holder, err := newMutex(t, c, name).TryLock(context.Background())
	require.NoError(t, err)
	defer holder.Unlock(context.Background())

	var calls atomic.Int32
	m := newMutex(t, c, name, distlock.WithRetry(func() backoff.BackOff {
		calls.Add(1)
		return backoff.WithMaxRetries(backoff.NewConstantBackOff(time.Millisecond), 3)
	}))
	for range 2 {
		_, err = m.Lock(context.Background())
		assert.ErrorIs(t, err, distlock.ErrLocked)
		assert.NotErrorIs(t, err, context.Canceled)
	}
	assert.Equal(t, int32(2), calls.Load(), "a fresh policy per Lock call")
}

// TestLockWaitIsCappedByHolderTTL: a waiter whose backoff is an hour still
// tries again when the holder's key expires (the acquire script returns the
// holder's PTTL), so it gets the lock of a holder that died without Unlock.
func TestLockWaitIsCappedByHolderTTL(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	_, err := newMutex(t, c, name, distlock.WithTTL(300*time.Millisecond), distlock.WithoutRenewal()).TryLock(context.Background())
	require.NoError(t, err) // and never unlocked or renewed: the holder "died"

	m := newMutex(t, c, name, distlock.WithRetry(func() backoff.BackOff { return backoff.NewConstantBackOff(time.Hour) }))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	lease, err := m.Lock(ctx)
	require.NoError(t, err, "the wait is capped by the holder's PTTL, not the 1h backoff")
	assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond, "it did wait for the holder's key to expire")
	require.NoError(t, lease.Unlock(context.Background()))
	require.NoError(t, c.Close())
	// The dead holder's key may outlive the quorum on one master by a few
	// ms; it expires with its 300ms TTL. Ours (10s TTL) must be released.
	eventuallyHolders(t, servers, name, 0, "no key left")
}

func TestMasterRestartAndScriptFlush(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(testTimeout))
	m := newMutex(t, c, lockName(t))
	lock := func() error {
		lease, err := m.TryLock(context.Background())
		if err != nil {
			return err
		}
		return lease.Unlock(context.Background())
	}
	require.NoError(t, lock())

	// A restarted master is empty (scripts gone); the client reconnects and
	// loads them again.
	require.NoError(t, servers[0].Restart())
	require.NoError(t, servers[1].Restart())
	require.Eventually(t, func() bool { return lock() == nil }, 5*time.Second, 10*time.Millisecond)

	// SCRIPT FLUSH: a round may fail with NOSCRIPT (an acquire is never
	// sent twice, out of order); the scripts are reloaded and a later round
	// succeeds. (On a loaded machine a round pipelined before the reader saw
	// the first NOSCRIPT fails too, so this waits for success.)
	for _, s := range servers {
		_, err := s.Do("SCRIPT", "FLUSH")
		require.NoError(t, err)
	}
	var errs []error
	require.Eventually(t, func() bool {
		err := lock()
		if err != nil {
			errs = append(errs, err)
		}
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	for _, err := range errs {
		assert.True(t, strings.Contains(err.Error(), "NOSCRIPT") || errors.Is(err, distlock.ErrMasterDown), "%v", err)
	}
	require.NoError(t, c.Close())
	for _, s := range servers {
		assert.Zero(t, dbsize(t, s))
	}
}

func TestDo(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	ran := false
	err := c.Do(context.Background(), name, func(ctx context.Context) error {
		ran = true
		assert.GreaterOrEqual(t, holders(t, servers, name), 2, "fn runs under the lock (a quorum holds it)")
		return nil
	})
	require.NoError(t, err)
	assert.True(t, ran)
	eventuallyHolders(t, servers, name, 0, "Do unlocks")

	boom := errors.New("boom")
	err = c.Do(context.Background(), name, func(ctx context.Context) error { return boom })
	assert.ErrorIs(t, err, boom)
	eventuallyHolders(t, servers, name, 0, "Do unlocks when fn fails")

	// Held elsewhere: fn does not run, Lock's error comes back.
	holder, err := newMutex(t, c, name).TryLock(context.Background())
	require.NoError(t, err)
	defer holder.Unlock(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = c.Do(ctx, name, func(ctx context.Context) error { panic("must not run") })
	assert.ErrorIs(t, err, distlock.ErrLocked)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}
