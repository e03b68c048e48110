package distlock_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// TestAddressFormsDial: addresses that differ only in spelling reach the
// same server; unix sockets work.
func TestAddressFormsDial(t *testing.T) {
	dir, err := os.MkdirTemp("", "dl") // short: unix socket paths are limited to ~100 bytes
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "r.sock")
	s := distlocktest.NewServer(t, "--unixsocket", sock, "--unixsocketperm", "700")
	host, port, _ := strings.Cut(s.Addr(), ":")
	for _, addr := range []string{
		" " + s.Addr() + " ", // from splitting "a, b"
		host + ":0" + port,
		"redis://" + host + ":" + port + "/0",
		"unix://" + sock,
	} {
		t.Run(addr, func(t *testing.T) {
			c := newClient(t, []string{addr})
			name := lockName(t)
			lease, err := newMutex(t, c, name).TryLock(context.Background())
			require.NoError(t, err)
			assert.Equal(t, int64(1), must(s.Do("EXISTS", name)))
			require.NoError(t, lease.Unlock(context.Background()))
		})
	}
}

// TestDerivedKeysNeverCollide: the keys the library derives from a name
// cannot equal another lock's name: locking "x" and "x:fence" (the old
// fence key) do not block each other, with fencing tokens on both.
func TestDerivedKeysNeverCollide(t *testing.T) {
	servers, c := cluster(t, 3)
	base := lockName(t)
	var names []string
	for _, suffix := range []string{"", ":fence", ":value", ":leader", ":release"} {
		names = append(names, base+suffix)
	}
	var leases []*distlock.Lease
	for _, name := range names {
		lease, err := newMutex(t, c, name).TryLock(context.Background())
		require.NoError(t, err, name)
		_, err = lease.Token(context.Background())
		require.NoError(t, err)
		g, err := distlock.NewGuarded[int](c, name+"/g", nil)
		require.NoError(t, err)
		require.NoError(t, g.Update(context.Background(), func(_ context.Context, v *int) error { *v++; return nil }))
		leases = append(leases, lease)
	}
	// Update returns once a quorum released the Guarded's lock: the last
	// master's release may still be on its way.
	assert.Eventually(t, func() bool {
		keys, err := servers[0].Do("KEYS", "*")
		require.NoError(t, err)
		for _, k := range keys.([]any) {
			key := string(k.([]byte))
			if !strings.HasPrefix(key, "__distlock:") && !slices.Contains(names, key) {
				return false
			}
		}
		return true
	}, 5*time.Second, 5*time.Millisecond, "the only keys outside the reserved prefix are the lock names")
	for _, l := range leases {
		require.NoError(t, l.Unlock(context.Background()))
	}
}

// TestKeyLayout: the README's key table, checked against what a lock, a
// fencing token, a Guarded value and an Election write.
func TestKeyLayout(t *testing.T) {
	assert.Equal(t, "__distlock:fence:{orders:42}", distlock.KeyOf("fence", "orders:42"))
	assert.Equal(t, "__distlock:release:{orders:42}", distlock.KeyOf("release", "orders:42"))
	assert.Equal(t, "__distlock:value:{user1}:{user1}:cart", distlock.KeyOf("value", "{user1}:cart"))
	assert.Equal(t, "__distlock:leader:{a{b}", distlock.KeyOf("leader", "a{b"))

	servers, c := cluster(t, 1)
	name := lockName(t)
	lease, err := newMutex(t, c, name).TryLock(context.Background())
	require.NoError(t, err)
	_, err = lease.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, int64(1), must(servers[0].Do("EXISTS", distlock.KeyOf("fence", name))))
	require.NoError(t, lease.Unlock(context.Background()))
	g, err := distlock.NewGuarded[int](c, name, nil)
	require.NoError(t, err)
	require.NoError(t, g.Update(context.Background(), func(_ context.Context, v *int) error { *v = 7; return nil }))
	assert.Equal(t, int64(1), must(servers[0].Do("EXISTS", distlock.KeyOf("value", name))))
}

// startClusterNode starts a redis-server in cluster mode that owns every
// slot, as a single-node cluster (the common managed-Redis shape).
func startClusterNode(t *testing.T) *distlocktest.Server {
	t.Helper()
	s := distlocktest.NewServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes-"+strconv.Itoa(int(time.Now().UnixNano()))+".conf")
	_, err := s.Do("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := s.Do("CLUSTER", "INFO")
		return err == nil && strings.Contains(string(info.([]byte)), "cluster_state:ok")
	}, 10*time.Second, 10*time.Millisecond, "the cluster becomes ready")
	return s
}

// TestEveryScriptTouchesOneSlot: against a cluster-mode server, which
// refuses a script whose keys span slots (CROSSSLOT), every operation of a
// lock works: each derived key shares the lock key's hash slot.
func TestEveryScriptTouchesOneSlot(t *testing.T) {
	s := startClusterNode(t)
	c := newClient(t, []string{s.Addr()})
	for _, name := range []string{"orders:42", "{user1}:cart", "a{b", "{x}{}y"} {
		t.Run(name, func(t *testing.T) {
			name := name + ":" + lockName(t)
			for _, k := range []string{"fence", "value", "leader", "release"} {
				assert.Equal(t, must(s.Do("CLUSTER", "KEYSLOT", name)), must(s.Do("CLUSTER", "KEYSLOT", distlock.KeyOf(k, name))), k)
			}
			m := newMutex(t, c, name, distlock.WithTTL(3*time.Second))
			lease, err := m.Lock(context.Background())
			require.NoError(t, err)
			require.NoError(t, lease.Extend(context.Background()))
			_, err = lease.Token(context.Background())
			require.NoError(t, err)
			require.NoError(t, lease.Unlock(context.Background()))

			g, err := distlock.NewGuarded[int](c, name, nil)
			require.NoError(t, err)
			require.NoError(t, g.Update(context.Background(), func(_ context.Context, v *int) error { *v++; return nil }))

			e, err := distlock.NewElection[string](c, name+"/e", nil)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			led, done := runLeader(ctx, e, "me")
			recv(t, led, "elected")
			v, ok, err := e.Leader(context.Background())
			require.NoError(t, err)
			assert.True(t, ok)
			assert.Equal(t, "me", v)
			cancel()
			assert.ErrorIs(t, recv(t, done, "Run"), context.Canceled)
		})
	}
}

// TestNotifierForgetsNames: the releasing Client and the waiting Client
// keep no state for a lock once nobody waits on it.
func TestNotifierForgetsNames(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	holder := newClient(t, distlocktest.Addrs(servers))
	waiter := newClient(t, distlocktest.Addrs(servers))
	long := strings.Repeat("n", 4096)
	for i := range 40 {
		name := fmt.Sprintf("%s:%s:%d", lockName(t), long, i)
		lease, err := newMutex(t, holder, name).TryLock(context.Background())
		require.NoError(t, err)
		got := lockAsync(context.Background(), newMutex(t, waiter, name))
		// Wait until the waiter subscribed, so the release is announced.
		require.Eventually(t, func() bool { return numsub(t, servers[0], distlock.KeyOf("release", name)) == 1 },
			5*time.Second, time.Millisecond)
		require.NoError(t, lease.Unlock(context.Background()))
		require.NoError(t, recv(t, got, "the waiter"))
	}
	require.Eventually(t, func() bool {
		return distlock.NotifierSize(holder) == 0 && distlock.NotifierSize(waiter) == 0
	}, 2*time.Second, 5*time.Millisecond, "nothing kept for 40 names nobody waits on")
	for _, s := range servers {
		assert.Zero(t, must(s.Do("PUBSUB", "NUMPAT")))
		chans := must(s.Do("PUBSUB", "CHANNELS", "__distlock:release:*")).([]any)
		assert.Empty(t, chans, "no subscription left")
	}
}
