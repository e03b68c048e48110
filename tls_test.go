package distlock_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// tlsServers starts n redis-servers serving TLS with ca's certificates.
func tlsServers(t *testing.T, ca *distlocktest.CA, n int, clientCerts bool, extra ...string) []*distlocktest.Server {
	servers := make([]*distlocktest.Server, n)
	for i := range servers {
		servers[i] = distlocktest.NewTLSServer(t, ca, clientCerts, extra...)
	}
	return servers
}

// exercise takes, waits for, fences and releases a lock through c, and
// reads it with Inspect: the traffic of every kind a Client sends.
func exercise(t *testing.T, c *distlock.Client, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m := newMutex(t, c, name)
	lease, err := m.Lock(ctx)
	require.NoError(t, err)
	token, err := lease.Token(ctx)
	require.NoError(t, err)
	assert.Positive(t, token)
	got := lockAsync(ctx, m) // woken by the release announcement
	require.Eventually(t, func() bool { return c.Stats().Waiting == 1 }, 5*time.Second, time.Millisecond)
	status, err := c.Inspect(ctx, name)
	require.NoError(t, err)
	assert.True(t, status.Held)
	require.NoError(t, lease.Unlock(ctx))
	require.NoError(t, recv(t, got, "the waiter"))
}

// TestTLS: masters reached over TLS, as rediss:// URLs or as host:port with
// WithTLS, with a CA and certificates the test makes: every kind of
// traffic works, the release announcements included.
func TestTLS(t *testing.T) {
	ca := distlocktest.NewCA(t)
	servers := tlsServers(t, ca, 3, false)
	var urls, plain []string
	for _, s := range servers {
		urls = append(urls, "rediss://"+s.TLSAddr())
		plain = append(plain, s.TLSAddr())
	}
	exercise(t, newClient(t, urls, distlock.WithTLS(ca.ClientConfig(false))), lockName(t))
	exercise(t, newClient(t, plain, distlock.WithTLS(ca.ClientConfig(false))), lockName(t))
}

// TestTLSClientCertificates: a master that requires a client certificate
// serves a Client that presents one signed by its CA, and refuses one that
// presents none; the error names every master.
func TestTLSClientCertificates(t *testing.T) {
	ca := distlocktest.NewCA(t)
	servers := tlsServers(t, ca, 3, true)
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, "rediss://"+s.TLSAddr())
	}
	exercise(t, newClient(t, addrs, distlock.WithTLS(ca.ClientConfig(true))), lockName(t))

	c := newClient(t, addrs, distlock.WithTLS(ca.ClientConfig(false)))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := newMutex(t, c, lockName(t)).Lock(ctx)
	require.ErrorIs(t, err, distlock.ErrNotAcquired)
	for _, s := range servers {
		assert.Contains(t, err.Error(), s.TLSAddr())
	}
}

// TestTLSUntrustedServer: a server whose certificate the Client does not
// trust is not used, and the error says why.
func TestTLSUntrustedServer(t *testing.T) {
	ca := distlocktest.NewCA(t)
	s := distlocktest.NewTLSServer(t, ca, false)
	c := newClient(t, []string{"rediss://" + s.TLSAddr()}) // system roots only
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := newMutex(t, c, lockName(t)).Lock(ctx)
	require.ErrorIs(t, err, distlock.ErrNotAcquired)
	assert.Contains(t, err.Error(), "certificate")
}

// lockUserACL is the ACL of a user that may use the locks whose names
// start with app: and nothing else (see the README's "Keys and channels").
var lockUserACL = []string{"--user", "locker", "on", ">pw", "~app:*", "~__distlock:*{app:*", "&__distlock:*", "+@all", "-@dangerous", "+info"}

// TestACLUserForLockNames: an ACL user whose keys are the locks named app:*
// and the keys derived from them can use every primitive on those names,
// and is refused (a permanent failure, at once) any other name. The Client
// is strict (WithStrictMasters): INFO, which the master checks need, is
// allowed.
func TestACLUserForLockNames(t *testing.T) {
	servers := distlocktest.NewServers(t, 3, lockUserACL...)
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, "redis://locker:pw@"+s.Addr())
	}
	c := newClient(t, addrs, distlock.WithMasterTimeout(testTimeout), distlock.WithStrictMasters())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	exercise(t, c, "app:orders:42")

	g, err := distlock.NewGuarded[int](c, "app:counter", nil)
	require.NoError(t, err)
	require.NoError(t, g.Update(ctx, func(_ context.Context, v *int) error { *v++; return nil }))

	e, err := distlock.NewElection[string](c, "app:leader", nil)
	require.NoError(t, err)
	leading, ran := runLeader(ctx, e, "me")
	recv(t, leading, "leadership")
	value, ok, err := e.Leader(ctx)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "me", value)

	rw, err := c.NewRWMutex("app:rw")
	require.NoError(t, err)
	r, err := rw.RLock(ctx)
	require.NoError(t, err)
	require.NoError(t, r.Unlock(ctx))
	w, err := rw.Lock(ctx)
	require.NoError(t, err)
	require.NoError(t, w.Unlock(ctx))

	sem, err := distlock.NewSemaphore(c, "app:sem", 2)
	require.NoError(t, err)
	_, permit, err := sem.Acquire(ctx)
	require.NoError(t, err)
	require.NoError(t, permit.Unlock(ctx))

	start := time.Now()
	_, err = newMutex(t, c, "other:1").Lock(ctx)
	assert.ErrorIs(t, err, distlock.ErrPermanent)
	assert.ErrorContains(t, err, "NOPERM")
	assert.Less(t, time.Since(start), 3*time.Second, "refused at once")
	assert.False(t, strings.Contains(err.Error(), ":pw@"), "no password in the error")

	cancel()
	assert.ErrorIs(t, recv(t, ran, "Run"), context.Canceled)
}
