package distlock_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// TestMinHoldRunsOncePerWindow: ten processes (Clients) triggered within a
// 20 milliseconds of each other for one window, each running a job of a
// millisecond under TryLock with a minimum hold: the job runs once.
func TestMinHoldRunsOncePerWindow(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	name := lockName(t)
	const window = 3 * time.Second
	var mu sync.Mutex
	var runs []time.Time // when each run of the job started
	start := time.Now().Add(100 * time.Millisecond)
	inParallel(t, 10, func(int) error {
		c, err := newUnfencedClient(distlocktest.Addrs(servers))
		if err != nil {
			return err
		}
		defer c.Close() // a process that ends: Close keeps the minimum hold too
		m, err := c.NewMutex(name, distlock.WithMinHold(window))
		if err != nil {
			return err
		}
		time.Sleep(time.Until(start) + rand.N(20*time.Millisecond)) // the fleet's cron fires, within 20ms
		lease, err := m.TryLock(context.Background())
		if err != nil {
			return nil // another host runs it
		}
		mu.Lock()
		runs = append(runs, time.Now())
		mu.Unlock()
		time.Sleep(time.Millisecond) // the job
		return lease.Unlock(context.Background())
	})
	require.NotEmpty(t, runs)
	slices.SortFunc(runs, func(a, b time.Time) int { return a.Compare(b) })
	first := runs[0]
	for _, r := range runs[1:] {
		// On a loaded machine a process may fire late, after the window:
		// that run is the next window's, and allowed.
		assert.GreaterOrEqual(t, r.Sub(first), window-50*time.Millisecond, "the job ran more than once in its window")
	}
	if time.Since(first) > window/2 {
		t.Logf("checked %v after the run (loaded machine): the key's TTL is not checked", time.Since(first))
		return
	}
	// The key stays on a quorum until the window ends, then expires. (A
	// master where a competitor's round came first may not have it.)
	kept := 0
	for _, s := range servers {
		pttl, err := s.Do("PTTL", name)
		require.NoError(t, err)
		if ms := pttl.(int64); ms > 0 && ms <= int64(window/time.Millisecond) {
			kept++
		}
	}
	assert.GreaterOrEqual(t, kept, 2, "the key is kept for the rest of the window on a quorum")
}

// TestMinHoldKeepsWhatIsLeft: on the Client's clock, Unlock before the
// minimum hold sets the keys' TTL to what is left of it and wakes nobody;
// Unlock after it deletes them as usual. A read lease keeps its entry the
// same way.
func TestMinHoldKeepsWhatIsLeft(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	clk := clock.NewMock()
	clk.Set(time.Now())
	c := newClient(t, distlocktest.Addrs(servers), distlock.WithClock(clk))
	name := lockName(t)
	m := newMutex(t, c, name, distlock.WithTTL(10*time.Second), distlock.WithMinHold(5*time.Second))

	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	clk.Add(2 * time.Second)
	require.NoError(t, lease.Unlock(context.Background()))
	recv(t, lease.Done(), "Done after Unlock")
	kept := 0 // on a quorum: a master suspected down under load may have missed the acquire
	for _, s := range servers {
		pttl, err := s.Do("PTTL", name)
		require.NoError(t, err)
		if ms := pttl.(int64); ms > 2500 && ms <= 3000 {
			kept++
		}
	}
	assert.GreaterOrEqual(t, kept, 2, "5s hold - 2s held")
	_, err = m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrLocked, "the lock stays taken")
	for _, s := range servers {
		_, err := s.Do("DEL", name)
		require.NoError(t, err)
	}

	lease, err = m.TryLock(context.Background())
	require.NoError(t, err)
	clk.Add(5 * time.Second)
	require.NoError(t, lease.Unlock(context.Background()))
	eventuallyHolders(t, servers, name, 0, "released after the minimum hold")

	rw, err := c.NewRWMutex(name, distlock.WithTTL(10*time.Second), distlock.WithMinHold(5*time.Second))
	require.NoError(t, err)
	reader, err := rw.RLock(context.Background())
	require.NoError(t, err)
	require.NoError(t, reader.Unlock(context.Background()))
	_, err = rw.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrLocked, "the read lease is kept")
	eventuallyHolders(t, servers, distlock.KeyOf("readers", name), 3, "reader entry kept")

	_, err = c.NewMutex(name, distlock.WithMinHold(-time.Second))
	assert.ErrorContains(t, err, "WithMinHold: must not be negative")
}

// TestMinHoldLostLeaseKeepsNothing: a read lease lost before Unlock (here:
// unrenewed past its TTL, while another reader keeps the reader set alive)
// is not brought back by its minimum hold, and neither are the names a
// failed MultiMutex call took.
func TestMinHoldLostLeaseKeepsNothing(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	const ttl = 300 * time.Millisecond
	keeper, err := newRW(t, c, name, distlock.WithTTL(ttl)).RLock(context.Background())
	require.NoError(t, err)
	rw := newRW(t, c, name, distlock.WithTTL(ttl), distlock.WithoutRenewal(), distlock.WithMinHold(10*time.Second))
	lost, err := rw.RLock(context.Background())
	require.NoError(t, err)
	recv(t, lost.Done(), "the unrenewed read lease ends")
	time.Sleep(ttl) // its entries expired on every master
	require.ErrorIs(t, lost.Unlock(context.Background()), distlock.ErrNotHeld)
	require.NoError(t, keeper.Unlock(context.Background()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	w, err := rw.Lock(ctx)
	require.NoError(t, err, "a writer kept out by a read lease lost before Unlock")
	require.NoError(t, w.Unlock(ctx))

	other := newClient(t, distlocktest.Addrs(servers))
	a, b := "a-"+lockName(t), "b-"+lockName(t)
	hb, err := newMutex(t, other, b).TryLock(ctx)
	require.NoError(t, err)
	mm, err := c.NewMultiMutex([]string{a, b}, distlock.WithMinHold(10*time.Second))
	require.NoError(t, err)
	_, err = mm.TryLock(ctx)
	require.ErrorIs(t, err, distlock.ErrLocked)
	require.NoError(t, hb.Unlock(ctx))
	la, err := newMutex(t, other, a).TryLock(ctx)
	require.NoError(t, err, "a failed MultiMutex call holds none of the names, even with a minimum hold")
	require.NoError(t, la.Unlock(ctx))
}
