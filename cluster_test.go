package distlock_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// TestSingleNodeCluster: a master that is a one-node Redis Cluster (the
// common managed endpoint, which enforces cluster rules behind one address):
// every primitive works, and the watchdog keeps many leases on many slots
// alive for several TTLs, each of its script calls on one slot (no
// CROSSSLOT).
func TestSingleNodeCluster(t *testing.T) {
	t.Run("one master", func(t *testing.T) { testClusterMasters(t, 0, nil) })
	// One master of three is a cluster: it gets a call per slot, the plain
	// masters their usual batches, and every round counts them all.
	t.Run("mixed", func(t *testing.T) { testClusterMasters(t, 2, nil) })
	// INFO refused: the Client does not know the master is a cluster node
	// until it refuses a batch with CROSSSLOT; the batch is sent again per
	// slot, and so are the later ones.
	t.Run("INFO refused", func(t *testing.T) {
		testClusterMasters(t, 0, []string{"--user", "noinfo", "on", ">pw", "~*", "&*", "+@all", "-info"})
	})
}

func testClusterMasters(t *testing.T, plain int, acl []string) {
	cl := distlocktest.NewCluster(t, 1, acl...)
	addrs := cl.Addrs()
	if acl != nil {
		addrs[0] = "redis://noinfo:pw@" + addrs[0]
	}
	addrs = append(addrs, distlocktest.Addrs(distlocktest.NewServers(t, plain))...)
	log := &recorder{}
	c := newClient(t, addrs, distlock.WithObserver(log.observe))
	exercise(t, c, "app:orders:42")
	g, err := distlock.NewGuarded[int](c, "app:counter", nil)
	require.NoError(t, err)
	require.NoError(t, g.Update(context.Background(), func(_ context.Context, v *int) error { *v++; return nil }))

	ctx := context.Background()
	ttl := 600 * time.Millisecond
	var leases []*distlock.Lease
	for i := range 300 {
		name := fmt.Sprintf("%s:%d", lockName(t), i)
		if i%3 == 0 {
			name = fmt.Sprintf("{%s}:%d", lockName(t), i) // hash-tagged names share a slot
		}
		var l *distlock.Lease
		var err error
		if i%5 == 1 { // read leases: another script, batched apart
			rw, rwErr := c.NewRWMutex(name, distlock.WithTTL(ttl))
			require.NoError(t, rwErr)
			l, err = rw.RLock(ctx)
		} else {
			l, err = newMutex(t, c, name, distlock.WithTTL(ttl)).Lock(ctx)
		}
		require.NoError(t, err)
		leases = append(leases, l)
	}
	time.Sleep(4 * ttl)
	for _, l := range leases {
		require.NoError(t, l.Err(), "renewed for four TTLs")
		require.NoError(t, l.Unlock(ctx))
	}
	for _, ev := range log.of(distlock.EventRenewal) {
		if ev.Err != nil {
			assert.NotContains(t, ev.Err.Error(), "CROSSSLOT")
		}
	}
	// The cluster master itself (in the mixed case the plain masters win
	// every round without it): no refusal but, when INFO is refused, the
	// first batch's, which was sent again per slot.
	if ms := c.Stats().Masters[0]; acl == nil {
		assert.NotContains(t, ms.LastError, "CROSSSLOT", "the cluster master refused a renewal")
	}
	v, err := cl.Nodes()[0].Do("KEYS", "*")
	require.NoError(t, err)
	for _, k := range v.([]any) {
		key := string(k.([]byte))
		if !strings.HasPrefix(key, "__distlock:fence:") && !strings.HasPrefix(key, "__distlock:value:") {
			t.Errorf("key %q left (only fencing counters and Guarded values stay)", key)
		}
	}
}

// TestSeveralNodeClusterRefusedClearly: a master that is a cluster of
// several nodes is not routed yet. A name in a slot another node owns fails
// at once (a permanent failure) with an error that says so.
func TestSeveralNodeClusterRefusedClearly(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3)
	c := newClient(t, cl.Addrs()[:1])
	name := ""
	for i := 0; name == ""; i++ {
		if n := fmt.Sprintf("%s:%d", lockName(t), i); cl.NodeFor(n) != cl.Nodes()[0] {
			name = n
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := newMutex(t, c, name).Lock(ctx)
	require.ErrorIs(t, err, distlock.ErrPermanent)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Lock stops at once")
	assert.ErrorContains(t, err, "MOVED")
	assert.ErrorContains(t, err, "does not route yet")
}
