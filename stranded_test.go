package distlock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// TestCloseReleasesLeases: a clean Close releases what the Client holds, so
// another process gets the lock at once, not after a TTL.
func TestCloseReleasesLeases(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	c, err := newUnfencedClient(distlocktest.Addrs(servers))
	require.NoError(t, err)
	var leases []*distlock.Lease
	for range 20 {
		lease, err := newMutex(t, c, lockName(t), distlock.WithTTL(time.Minute)).TryLock(context.Background())
		require.NoError(t, err)
		leases = append(leases, lease)
	}
	start := time.Now()
	require.NoError(t, c.Close())
	assert.Less(t, time.Since(start), 2*time.Second, "Close is bounded")
	other := newClient(t, distlocktest.Addrs(servers))
	for _, l := range leases {
		assert.True(t, isDone(l))
		assert.ErrorIs(t, l.Err(), distlock.ErrClosed)
		assert.ErrorIs(t, l.Err(), distlock.ErrLeaseLost)
		lease, err := newMutex(t, other, l.Name()).TryLock(context.Background())
		require.NoError(t, err, "released by Close")
		require.NoError(t, lease.Unlock(context.Background()))
		assert.ErrorIs(t, l.Unlock(context.Background()), distlock.ErrNotHeld)
	}
	// other's rounds return at a quorum: the last master's acquire and
	// release may still be on the wire.
	for _, s := range servers {
		require.Eventually(t, func() bool { return dbsize(t, s) == 0 }, 2*time.Second, 2*time.Millisecond, "keys left")
	}
}

// TestCallsAfterClose: every call after Close fails with ErrClosed.
func TestCallsAfterClose(t *testing.T) {
	c, err := distlock.NewClient(masters)
	require.NoError(t, err)
	m := newMutex(t, c, lockName(t))
	require.NoError(t, c.Close())
	_, err = c.NewMutex(lockName(t))
	assert.ErrorIs(t, err, distlock.ErrClosed)
	err = c.Do(context.Background(), lockName(t), func(context.Context) error { panic("must not run") })
	assert.ErrorIs(t, err, distlock.ErrClosed)
	_, err = distlock.NewGuarded[int](c, lockName(t), nil)
	assert.ErrorIs(t, err, distlock.ErrClosed)
	_, err = distlock.NewElection[int](c, lockName(t), nil)
	assert.ErrorIs(t, err, distlock.ErrClosed)
	err = within(t, 5*time.Second, func() error {
		_, err := m.Lock(context.Background())
		return err
	})
	assert.ErrorIs(t, err, distlock.ErrClosed, "Lock stops at once")
}

// TestCloseSendsKeptReleases: a release kept for a master that was down is
// sent by Close when the master answers again.
func TestCloseSendsKeptReleases(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(testTimeout))
	name := lockName(t)
	lease, err := newMutex(t, c, name, distlock.WithTTL(time.Minute)).TryLock(context.Background())
	require.NoError(t, err)
	eventuallyHolders(t, servers, name, 3, "acquired everywhere")
	proxies[0].SetBlackhole(true)
	require.NoError(t, lease.Unlock(context.Background()), "released on a quorum")
	time.Sleep(2 * testTimeout) // master 0 times out and is suspected down
	proxies[0].SetBlackhole(false)
	require.NoError(t, c.Close())
	assert.Equal(t, 0, holders(t, servers, name), "no key left on any master")
}

// TestStaleAcquireAfterLongStall: a master stalled for longer than the TTL
// runs the acquire left in its buffers when it resumes; the release kept
// for it deletes that key, instead of it staying for another TTL. The
// Unlock comes after the master is suspected down, so its release is not
// written behind the acquire on the stalled connection: only the kept
// release can delete the key.
func TestStaleAcquireAfterLongStall(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(300*time.Millisecond))
	name := lockName(t)
	const ttl = 2 * time.Second
	require.NoError(t, servers[0].Pause())
	lease, err := newMutex(t, c, name, distlock.WithTTL(ttl)).TryLock(context.Background())
	require.NoError(t, err, "two masters are a quorum")
	time.Sleep(time.Second) // master 0 is suspected down
	require.NoError(t, lease.Unlock(context.Background()))
	time.Sleep(ttl + 500*time.Millisecond) // longer than the TTL
	require.NoError(t, servers[0].Resume())
	// Without the kept release the stale key would live for a whole TTL
	// after the resume.
	require.Eventually(t, func() bool { return holders(t, servers, name) == 0 }, ttl/2, 5*time.Millisecond,
		"the stale acquire's key is deleted")
}

// TestRenewalHealsAfterPartition: a lease acquired on 3 of 5 masters during
// a partition is written to the other two once it heals, so it survives two
// more masters failing.
func TestRenewalHealsAfterPartition(t *testing.T) {
	servers, proxies, c := proxied(t, 5, distlock.WithMasterTimeout(testTimeout))
	name := lockName(t)
	proxies[3].SetBlackhole(true)
	proxies[4].SetBlackhole(true)
	lease, err := newMutex(t, c, name, distlock.WithTTL(1500*time.Millisecond)).TryLock(context.Background())
	require.NoError(t, err)
	proxies[3].SetBlackhole(false)
	proxies[4].SetBlackhole(false)
	require.Eventually(t, func() bool { return holders(t, servers, name) == 5 }, 10*time.Second, 10*time.Millisecond,
		"the renewals set the key on the masters that missed the acquire")
	proxies[0].SetBlackhole(true)
	proxies[1].SetBlackhole(true)
	time.Sleep(3 * time.Second) // two TTLs
	assert.NoError(t, lease.Err(), "held on 3 of 5 masters")
	require.NoError(t, lease.Unlock(context.Background()))
}

// TestRenewalHealsRestartedMaster: a master restarted without persistence
// gets the key back at the next renewal; then losing another master leaves
// the lease held.
func TestRenewalHealsRestartedMaster(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(testTimeout))
	name := lockName(t)
	lease, err := newMutex(t, c, name, distlock.WithTTL(1500*time.Millisecond)).TryLock(context.Background())
	require.NoError(t, err)
	require.NoError(t, servers[0].Restart())
	require.Eventually(t, func() bool {
		v, err := servers[0].Do("EXISTS", name)
		return err == nil && v.(int64) == 1
	}, 5*time.Second, 10*time.Millisecond, "the key is set again on the restarted master")

	// Healing never takes a key from another owner.
	_, err = servers[0].Do("SET", name, "someone else")
	require.NoError(t, err)
	time.Sleep(time.Second) // two renewals
	assert.Equal(t, "someone else", string(must(servers[0].Do("GET", name)).([]byte)))
	assert.NoError(t, lease.Err(), "held on the other two")
	_, err = servers[0].Do("DEL", name)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		v, err := servers[0].Do("EXISTS", name)
		return err == nil && v.(int64) == 1
	}, 5*time.Second, 10*time.Millisecond, "set again once it is free")

	require.NoError(t, servers[1].Kill())
	time.Sleep(3 * time.Second) // two TTLs
	assert.NoError(t, lease.Err(), "held on 2 of 3 masters")
	require.NoError(t, lease.Unlock(context.Background()))
}

// TestExtendHeals: a manual Extend sets the key again where it was missing.
func TestExtendHeals(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	lease, err := newMutex(t, c, name, distlock.WithoutRenewal(), distlock.WithTTL(time.Minute)).TryLock(context.Background())
	require.NoError(t, err)
	eventuallyHolders(t, servers, name, 3, "acquired everywhere")
	_, err = servers[1].Do("DEL", name)
	require.NoError(t, err)
	require.NoError(t, lease.Extend(context.Background()))
	eventuallyHolders(t, servers, name, 3, "Extend set it again")
	require.NoError(t, lease.Unlock(context.Background()))
	eventuallyHolders(t, servers, name, 0, "released everywhere")
}

// the masters: Close neither released them nor stopped Lock.
func TestLockRacingClose(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(testTimeout))
	name := lockName(t)
	m := newMutex(t, c, name, distlock.WithTTL(30*time.Second))
	for _, p := range proxies {
		p.SetLatency(60 * time.Millisecond)
	}
	type res struct {
		l   *distlock.Lease
		err error
	}
	done := make(chan res, 1)
	go func() {
		l, err := m.Lock(context.Background())
		done <- res{l, err}
	}()
	time.Sleep(30 * time.Millisecond) // the acquire is on the wire
	require.NoError(t, c.Close())
	r := recv(t, done, "Lock")
	for _, p := range proxies {
		p.SetLatency(0)
	}
	if r.err == nil {
		t.Logf("Lock returned a lease after Close: lease.Err() = %v; Unlock: %v", r.l.Err(), r.l.Unlock(context.Background()))
	}
	t.Logf("holders after Close: %d", holders(t, servers, name))
	assert.Equal(t, 0, holders(t, servers, name), "keys left behind after Close")
	if r.err == nil {
		assert.NoError(t, r.l.Err(), "Lock returned nil error but the lease is already lost")
	}
}

// TestCloseEndsEveryKind: Close ends and releases the leases of every kind
// (a read lease, a write lease, a slot's, a MultiLease), ends the calls
// still waiting (a writer behind the reader, a slot waiter), and leaves no
// key behind, the waiting writer's bar included.
func TestCloseEndsEveryKind(t *testing.T) {
	servers, c := cluster(t, 3)
	ctx := context.Background()
	name := lockName(t)
	rw, err := c.NewRWMutex(name)
	require.NoError(t, err)
	reader, err := rw.RLock(ctx)
	require.NoError(t, err)
	readersEverywhere(t, servers, name)
	writer, err := c.NewRWMutex(name + ":w")
	require.NoError(t, err)
	wlease, err := writer.Lock(ctx)
	require.NoError(t, err)
	sem, err := distlock.NewSemaphore(c, name, 1)
	require.NoError(t, err)
	_, slot, err := sem.Acquire(ctx)
	require.NoError(t, err)
	mm, err := c.NewMultiMutex([]string{name + ":a", name + ":b"})
	require.NoError(t, err)
	ml, err := mm.Lock(ctx)
	require.NoError(t, err)

	waitingWriter := make(chan error, 1)
	go func() { _, err := rw.Lock(ctx); waitingWriter <- err }()
	waitingSlot := make(chan error, 1)
	go func() { _, _, err := sem.Acquire(ctx); waitingSlot <- err }()
	// A lock held by another Client, waited for with a 5s backoff.
	other := newClient(t, distlocktest.Addrs(servers))
	otherLease, err := newMutex(t, other, name+":other").Lock(ctx)
	require.NoError(t, err)
	held, err := c.NewMutex(name+":other", distlock.WithRetry(slowRetry))
	require.NoError(t, err)
	waitingMutex := make(chan error, 1)
	go func() { _, err := held.Lock(ctx); waitingMutex <- err }()
	eventuallyHolders(t, servers, distlock.KeyOf("writer-waits", name), 3, "the waiting writer's bar")

	time.Sleep(50 * time.Millisecond) // the Mutex waiter is in its backoff
	closing := time.Now()
	require.NoError(t, c.Close())
	err = recv(t, waitingMutex, "the waiting Mutex")
	require.ErrorIs(t, err, distlock.ErrClosed)
	require.ErrorIs(t, err, distlock.ErrNotAcquired)
	assert.Less(t, time.Since(closing), 2*time.Second, "a waiting Lock ends when Close begins, not after its backoff")
	require.ErrorIs(t, recv(t, waitingWriter, "the waiting writer"), distlock.ErrClosed)
	require.ErrorIs(t, recv(t, waitingSlot, "the slot waiter"), distlock.ErrClosed)
	for _, l := range []*distlock.Lease{reader, wlease, slot} {
		recv(t, l.Done(), l.Name())
		require.ErrorIs(t, l.Err(), distlock.ErrClosed)
	}
	recv(t, ml.Done(), "the MultiLease")
	require.ErrorIs(t, ml.Err(), distlock.ErrClosed)
	require.NoError(t, otherLease.Unlock(ctx))
	// Unlock returns once a quorum released; the last master's release may
	// still be on its way: wait for it.
	for _, s := range servers {
		assert.Eventually(t, func() bool {
			keys, err := s.Do("KEYS", "*")
			require.NoError(t, err)
			return len(keys.([]any)) == 0
		}, 5*time.Second, 5*time.Millisecond, "keys left on %s", s.Addr())
	}
}

// TestReleaseAfterScriptFlushSurvivesClose: a release that a master
// answers with NOSCRIPT (its scripts were flushed) is sent again once the
// scripts are loaded, even when the answer comes after Close began: Close
// sends it on a connection of its own, so no key is left.
func TestReleaseAfterScriptFlushSurvivesClose(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(testTimeout))
	ctx := context.Background()
	warmUp(t, c)
	proxies[2].SetLatency(200 * time.Millisecond)
	for _, s := range servers {
		_, err := s.Do("SCRIPT", "FLUSH")
		require.NoError(t, err)
	}
	name := lockName(t)
	lease, err := newMutex(t, c, name).TryLock(ctx)
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(ctx), "released on the two fast masters")
	require.NoError(t, c.Close())
	for i, s := range servers {
		assert.Zero(t, dbsize(t, s), "master %d: a key left", i)
	}
}
