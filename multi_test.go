package distlock_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// TestMultiMutexNoDeadlockNoOverlap: Clients lock {a,b}, {b,a} and {b,c}
// in a loop while a minority of the masters fails: every call returns (a
// deadlock would hold two of them until their context ends), and no two
// callers are ever inside with a name in common.
func TestMultiMutexNoDeadlockNoOverlap(t *testing.T) {
	for _, f := range minorityFaults {
		t.Run(f.name, func(t *testing.T) {
			servers := distlocktest.NewServers(t, f.masters)
			a, b, cname := lockName(t), lockName(t), lockName(t)
			sets := [][]string{{a, b}, {b, a}, {b, cname}}
			occ := newOccupancy(0)
			var cycles [3]atomic.Int64
			var next atomic.Int32
			type caller struct {
				mm  *distlock.MultiMutex
				set int
			}
			underFault(t, f, servers, len(sets), 1, func(c *distlock.Client) (caller, error) {
				i := int(next.Add(1)) - 1
				mm, err := c.NewMultiMutex(sets[i], distlock.WithTTL(5*time.Second))
				return caller{mm, i}, err
			}, func(cl caller, _ int) error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				ml, err := cl.mm.Lock(ctx)
				if err != nil {
					return err
				}
				for _, n := range sets[cl.set] {
					occ.enter(n, false)
				}
				time.Sleep(time.Millisecond)
				for _, n := range sets[cl.set] {
					occ.exit(n, false)
				}
				cycles[cl.set].Add(1)
				return ml.Unlock(context.Background())
			})
			occ.check(t)
			for i := range sets {
				assert.Greater(t, cycles[i].Load(), int64(5), "caller %d got few turns", i)
			}
			t.Logf("cycles: %d %d %d", cycles[0].Load(), cycles[1].Load(), cycles[2].Load())
		})
	}
}

// TestMultiMutexAllOrNone: when one name is held elsewhere, TryLock and a
// Lock that times out hold none of the names afterwards.
func TestMultiMutexAllOrNone(t *testing.T) {
	servers, c := cluster(t, 3)
	a, b, z := "a-"+lockName(t), "b-"+lockName(t), "z-"+lockName(t)
	other, err := newMutex(t, newClient(t, distlocktest.Addrs(servers)), b).TryLock(context.Background())
	require.NoError(t, err)
	// On every master before we start (fast quorum returns first), so that
	// "untouched" below means all three.
	eventuallyHolders(t, servers, b, 3, "the other owner's b")

	mm, err := c.NewMultiMutex([]string{z, b, a, b})
	require.NoError(t, err)
	assert.Equal(t, []string{a, b, z}, mm.Names(), "sorted, without duplicates")

	_, err = mm.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrNotAcquired)
	require.ErrorIs(t, err, distlock.ErrLocked)
	assert.ErrorContains(t, err, b)
	eventuallyHolders(t, servers, a, 0, "a, taken before b, is released")
	assert.Zero(t, holders(t, servers, z), "z is never tried")

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = mm.Lock(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, distlock.ErrNotAcquired)
	eventuallyHolders(t, servers, a, 0, "a is released when Lock gives up")
	assert.Equal(t, 3, holders(t, servers, b), "the other owner's b is untouched")

	require.NoError(t, other.Unlock(context.Background()))
	ml, err := mm.TryLock(context.Background())
	require.NoError(t, err)
	for _, n := range []string{a, b, z} {
		// A quorum: the other owner's release of b may still be on its way
		// to the third master when our acquire gets there (fast quorum).
		require.Eventually(t, func() bool { return holders(t, servers, n) >= 2 }, 2*time.Second, 5*time.Millisecond, n)
	}
	leases := ml.Leases()
	require.Len(t, leases, 3)
	assert.Equal(t, b, leases[1].Name())
	_, err = leases[2].Token(context.Background())
	require.NoError(t, err)
	require.NoError(t, ml.Unlock(context.Background()))
	require.ErrorIs(t, ml.Unlock(context.Background()), distlock.ErrNotHeld)
	recv(t, ml.Done(), "Done after Unlock")
	require.NoError(t, ml.Err())
	assert.ErrorIs(t, context.Cause(ml.Context()), context.Canceled)
	for _, n := range []string{a, b, z} {
		eventuallyHolders(t, servers, n, 0, n)
	}
}

// TestMultiLeaseLostWithAnyName: when one name's lease is lost, the whole
// lease is: Done closes and Err says which; Unlock still releases the rest.
func TestMultiLeaseLostWithAnyName(t *testing.T) {
	servers, c := cluster(t, 3)
	a, b := "a-"+lockName(t), "b-"+lockName(t) // in this order
	mm, err := c.NewMultiMutex([]string{a, b}, distlock.WithTTL(600*time.Millisecond))
	require.NoError(t, err)
	ml, err := mm.Lock(context.Background())
	require.NoError(t, err)
	ctx := ml.Context()
	for _, s := range servers {
		_, err := s.Do("DEL", b)
		require.NoError(t, err)
	}
	recv(t, ml.Done(), "the loss of b")
	require.ErrorIs(t, ml.Err(), distlock.ErrLeaseLost)
	assert.ErrorContains(t, ml.Err(), b)
	assert.ErrorIs(t, context.Cause(ctx), distlock.ErrLeaseLost)
	require.NoError(t, ml.Leases()[0].Err(), "a is still held")
	err = ml.Unlock(context.Background())
	require.ErrorIs(t, err, distlock.ErrNotHeld, "b's lease was lost")
	eventuallyHolders(t, servers, a, 0, "Unlock released a")

	// A part unlocked on its own ends the MultiLease too.
	ml, err = mm.Lock(context.Background())
	require.NoError(t, err)
	require.NoError(t, ml.Leases()[1].Unlock(context.Background()))
	recv(t, ml.Done(), "a part unlocked on its own")
	require.ErrorIs(t, ml.Err(), distlock.ErrNotHeld)
	require.ErrorIs(t, ml.Unlock(context.Background()), distlock.ErrNotHeld)
	eventuallyHolders(t, servers, a, 0, "Unlock released the rest")
}

// TestMultiMutexDoAndInput: Do runs fn under every name and releases them;
// bad input is refused.
func TestMultiMutexDoAndInput(t *testing.T) {
	servers, c := cluster(t, 3)
	a, b := lockName(t), lockName(t)
	mm, err := c.NewMultiMutex([]string{a, b})
	require.NoError(t, err)
	ran := false
	require.NoError(t, mm.Do(context.Background(), func(ctx context.Context) error {
		ran = holders(t, servers, a) >= 2 && holders(t, servers, b) >= 2
		return nil
	}))
	assert.True(t, ran)
	eventuallyHolders(t, servers, a, 0, "a after Do")
	boom := errors.New("boom")
	require.ErrorIs(t, mm.Do(context.Background(), func(context.Context) error { return boom }), boom)

	_, err = c.NewMultiMutex(nil)
	assert.ErrorContains(t, err, "no names")
	_, err = c.NewMultiMutex([]string{a, ""})
	assert.ErrorContains(t, err, "must not be empty")
	_, err = c.NewMultiMutex([]string{a}, distlock.WithTTL(-1))
	assert.ErrorContains(t, err, "WithTTL")
}

// TestCloseDuringMultiLockKeepsNothing: Close while a MultiMutex.Lock with
// a minimum hold holds its first name and waits for the second: Close's
// release of the first name keeps it for the minimum hold, but the failed
// call gives it back at once.
func TestCloseDuringMultiLockKeepsNothing(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(testTimeout))
	other := newClient(t, distlocktest.Addrs(servers))
	name := lockName(t)
	held, err := newMutex(t, other, name+":b").Lock(context.Background())
	require.NoError(t, err)
	mm, err := c.NewMultiMutex([]string{name + ":a", name + ":b"}, distlock.WithMinHold(time.Minute))
	require.NoError(t, err)
	for _, p := range proxies {
		p.SetLatency(100 * time.Millisecond) // Close comes while b's round is on the wire
	}
	done := make(chan error, 1)
	go func() { _, err := mm.Lock(context.Background()); done <- err }()
	eventuallyHolders(t, servers, name+":a", 3, "a taken")
	time.Sleep(150 * time.Millisecond)
	require.NoError(t, c.Close())
	require.ErrorIs(t, recv(t, done, "MultiMutex.Lock"), distlock.ErrClosed)
	for _, p := range proxies {
		p.SetLatency(0)
	}
	eventuallyHolders(t, servers, name+":a", 0, "a kept by a failed MultiMutex call")
	require.NoError(t, held.Unlock(context.Background()))
}
