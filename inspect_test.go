package distlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
)

func TestInspect(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(testTimeout))
	ctx := context.Background()
	name := lockName(t)

	st, err := c.Inspect(ctx, name)
	require.NoError(t, err)
	assert.False(t, st.Held, "free lock")
	assert.Equal(t, 2, st.Quorum)
	require.Len(t, st.Masters, 3)
	for i, ms := range st.Masters {
		assert.Equal(t, servers[i].Addr(), ms.Addr)
		assert.False(t, ms.Held)
		assert.Zero(t, ms.TTL)
		assert.NoError(t, ms.Err)
	}

	lease, err := newMutex(t, c, name, distlock.WithTTL(20*time.Second)).Lock(ctx)
	require.NoError(t, err)
	token, err := lease.Token(ctx)
	require.NoError(t, err)
	eventuallyHolders(t, servers, name, 3, "the lease on every master")

	st, err = c.Inspect(ctx, name)
	require.NoError(t, err)
	assert.True(t, st.Held, "held on a quorum")
	fenced := 0
	for _, ms := range st.Masters {
		assert.True(t, ms.Held, ms.Addr)
		assert.Greater(t, ms.TTL, time.Duration(0), ms.Addr)
		assert.LessOrEqual(t, ms.TTL, 20*time.Second, ms.Addr)
		if ms.Fence == token {
			fenced++
		}
	}
	assert.GreaterOrEqual(t, fenced, 2, "the token written back on a quorum")

	// A paused master: its entry says why, the others still answer.
	require.NoError(t, servers[2].Pause())
	defer func() { _ = servers[2].Resume() }()
	st, err = c.Inspect(ctx, name)
	require.NoError(t, err)
	assert.True(t, st.Held, "two masters are a quorum")
	assert.Error(t, st.Masters[2].Err)
	assert.NoError(t, st.Masters[0].Err)
	require.NoError(t, servers[2].Resume())

	// Another owner's token on a single master is not a quorum.
	require.NoError(t, lease.Unlock(ctx))
	_, err = servers[0].Do("SET", name, "someone-else", "PX", 20000)
	require.NoError(t, err)
	st, err = c.Inspect(ctx, name)
	require.NoError(t, err)
	assert.False(t, st.Held, "one master is no quorum")
	assert.True(t, st.Masters[0].Held)

	_, err = c.Inspect(ctx, "")
	assert.Error(t, err, "invalid name")
	require.NoError(t, c.Close())
	_, err = c.Inspect(ctx, name)
	assert.True(t, errors.Is(err, distlock.ErrClosed), "%v", err)
}
