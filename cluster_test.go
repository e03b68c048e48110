package distlock_test

import (
	"context"
	"fmt"
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
	t.Run("one master", func(t *testing.T) { testClusterMasters(t, 0) })
	// One master of three is a cluster: it gets a call per slot, the plain
	// masters their usual batches, and every round counts them all.
	t.Run("mixed", func(t *testing.T) { testClusterMasters(t, 2) })
}

func testClusterMasters(t *testing.T, plain int) {
	cl := distlocktest.NewCluster(t, 1)
	addrs := append(cl.Addrs(), distlocktest.Addrs(distlocktest.NewServers(t, plain))...)
	var log eventLog
	c := newClient(t, addrs, distlock.WithObserver(log.observe))
	exercise(t, c, "app:orders:42")

	ctx := context.Background()
	ttl := 600 * time.Millisecond
	var leases []*distlock.Lease
	for i := range 300 {
		name := fmt.Sprintf("%s:%d", lockName(t), i)
		if i%3 == 0 {
			name = fmt.Sprintf("{%s}:%d", lockName(t), i) // hash-tagged names share a slot
		}
		l, err := newMutex(t, c, name, distlock.WithTTL(ttl)).Lock(ctx)
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
	v, err := cl.Nodes()[0].Do("DBSIZE")
	require.NoError(t, err)
	assert.LessOrEqual(t, v.(int64), int64(1+1), "no lock key left (fencing counters of exercise stay)")
}
