package distlock_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
)

func TestStats(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(200*time.Millisecond))
	ctx := context.Background()

	s := c.Stats()
	require.Len(t, s.Masters, 3)
	assert.Equal(t, 2, s.Quorum)
	assert.Equal(t, 3, s.Up)
	assert.Zero(t, s.Leases)
	assert.Zero(t, s.Waiting)
	for i, ms := range s.Masters {
		assert.Equal(t, servers[i].Addr(), ms.Addr)
		assert.Equal(t, "up", ms.State)
		assert.Empty(t, ms.Reason)
	}

	name := lockName(t)
	lease, err := newMutex(t, c, name).Lock(ctx)
	require.NoError(t, err)
	s = c.Stats()
	assert.Equal(t, 1, s.Leases, "held")
	// Counted once the writers and readers are done with the round (fast
	// quorum returns first).
	require.Eventually(t, func() bool {
		for _, ms := range c.Stats().Masters {
			if ms.RoundTrips == 0 || ms.Replies == 0 || ms.Failures != 0 {
				return false
			}
		}
		return true
	}, waitTimeout, 5*time.Millisecond, "round trips and replies on every master, no failure")

	// A waiter is counted while it waits.
	waiting := lockAsync(ctx, newMutex(t, c, name))
	require.Eventually(t, func() bool { return c.Stats().Waiting == 1 }, waitTimeout, 5*time.Millisecond)
	require.NoError(t, lease.Unlock(ctx))
	require.NoError(t, recv(t, waiting, "the waiter"))
	require.Eventually(t, func() bool { s := c.Stats(); return s.Waiting == 0 && s.Leases == 0 }, waitTimeout, 5*time.Millisecond)

	// A paused master is down, with the reason, and its failures counted.
	require.NoError(t, servers[2].Pause())
	defer func() { _ = servers[2].Resume() }()
	for range 3 {
		if l, err := newMutex(t, c, lockName(t)).TryLock(ctx); err == nil {
			require.NoError(t, l.Unlock(ctx))
		}
	}
	require.Eventually(t, func() bool { return c.Stats().Masters[2].State == "down" }, waitTimeout, 5*time.Millisecond)
	// A release for the master that is down is kept for it.
	l, err := newMutex(t, c, lockName(t)).TryLock(ctx)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))
	s = c.Stats()
	assert.Positive(t, s.Masters[2].Deferred, "the release kept for the master")
	assert.Equal(t, 2, s.Up)
	assert.Contains(t, s.Masters[2].Reason, "suspected down")
	assert.Positive(t, s.Masters[2].Failures)
	require.NoError(t, servers[2].Resume())
	require.Eventually(t, func() bool { s := c.Stats(); return s.Up == 3 && s.Masters[2].Deferred == 0 }, waitTimeout, 5*time.Millisecond)
	assert.NotEmpty(t, c.Stats().Masters[2].LastError, "the last failure stays after the master recovers")
	assert.Empty(t, c.Stats().Masters[0].LastError)

	// It marshals for expvar.
	b, err := json.Marshal(c.Stats())
	require.NoError(t, err)
	assert.Contains(t, string(b), `"state":"up"`)

	require.NoError(t, c.Close())
	s = c.Stats()
	assert.Zero(t, s.Up, "closed")
	assert.Equal(t, "down", s.Masters[0].State)
}
