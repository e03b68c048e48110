package distlock_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
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

// TestClusterOfThreeNodes: a master that is a 3-node Redis Cluster, given
// by one seed node or by several: thousands of names, spread over every
// node, are locked, kept alive by the watchdog for several TTLs and
// released; no lease is lost, no lock key stays, no node answers CROSSSLOT,
// and every node carried its own names' traffic over its own connection.
func TestClusterOfThreeNodes(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3)
	addrs := cl.Addrs()
	t.Run("one seed", func(t *testing.T) { testManyNames(t, cl, []string{addrs[1]}) })
	t.Run("seeds", func(t *testing.T) { testManyNames(t, cl, []string{addrs[2] + "," + addrs[0]}) })
}

func testManyNames(t *testing.T, cl *distlocktest.Cluster, addrs []string) {
	log := &recorder{}
	c := newClient(t, addrs, distlock.WithObserver(log.observe))
	exercise(t, c, lockName(t)) // a waiter woken by the release announcement, a token, Inspect
	ctx := context.Background()
	ttl := time.Second
	const names = 3000
	leases := make([]*distlock.Lease, names)
	perNode := map[*distlocktest.Server]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, names)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < names; i += 16 {
				name := fmt.Sprintf("%s:%d", lockName(t), i)
				if i%3 == 0 {
					name = fmt.Sprintf("{%s:%d}:%d", lockName(t), i%30, i) // hash-tagged: ten names share a slot
				}
				m, err := c.NewMutex(name, distlock.WithTTL(ttl))
				if err == nil {
					leases[i], err = m.Lock(ctx)
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
				mu.Lock()
				perNode[cl.NodeFor(name)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, n := range cl.Nodes() {
		require.Greater(t, perNode[n], names/5, "names on node %s", n.Addr())
	}
	time.Sleep(4 * ttl)
	for _, l := range leases {
		require.NoError(t, l.Err(), "renewed for four TTLs")
	}
	st := c.Stats().Masters[0]
	require.Len(t, st.Nodes, 2, "the two other nodes, each with a connection of its own")
	for _, ns := range append(st.Nodes, st) {
		assert.Equal(t, "up", ns.State, ns.Addr)
		assert.Greater(t, ns.Replies, uint64(names/5), "node %s carried its names", ns.Addr)
		assert.NotContains(t, ns.LastError, "CROSSSLOT", ns.Addr)
	}
	for _, l := range leases {
		require.NoError(t, l.Unlock(ctx))
	}
	for _, ev := range log.of(distlock.EventRenewal) {
		if ev.Err != nil {
			t.Errorf("renewal failed: %v", ev.Err)
		}
	}
	for _, n := range cl.Nodes() {
		v, err := n.Do("KEYS", "*")
		require.NoError(t, err)
		for _, k := range v.([]any) {
			if key := string(k.([]byte)); !strings.HasPrefix(key, "__distlock:fence:") {
				t.Errorf("key %q left on %s", key, n.Addr())
			}
		}
	}
}

// TestClusterSlotMigration: a slot is moved from one node to another, the
// way redis-cli reshards (IMPORTING and MIGRATING, keys moved a few at a
// time, then SETSLOT NODE), while locks in it are held, waited for and
// taken in a loop. No lease is lost (renewals follow ASK, and a batch
// refused with TRYAGAIN is sent again lease by lease), the waiter is woken
// when the lock it waits for is released, new acquisitions succeed during
// and after the move, and mutual exclusion holds: no two holders of one
// name ever overlap.
func TestClusterSlotMigration(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3)
	log := &recorder{}
	c := newClient(t, cl.Addrs()[:1], distlock.WithObserver(log.observe))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ttl := time.Second
	tag := "{" + lockName(t) + "}"
	slot := cl.SlotOf(tag)
	from := cl.NodeFor(tag)
	to := cl.Nodes()[(slices.Index(cl.Nodes(), from)+1)%3]

	// Held across the move, one of them waited for.
	var held []*distlock.Lease
	for i := range 20 {
		l, err := newMutex(t, c, fmt.Sprintf("%s:held:%d", tag, i), distlock.WithTTL(ttl)).Lock(ctx)
		require.NoError(t, err)
		held = append(held, l)
	}
	waited := make(chan time.Time, 1)
	go func() {
		m, err := c.NewMutex(tag+":held:0", distlock.WithTTL(ttl))
		if err == nil {
			var l *distlock.Lease
			if l, err = m.Lock(ctx); err == nil {
				waited <- time.Now()
				_ = l.Unlock(ctx)
				return
			}
		}
		t.Errorf("the waiter: %v", err)
		close(waited)
	}()
	require.Eventually(t, func() bool { return c.Stats().Waiting == 1 }, 5*time.Second, time.Millisecond)

	// Contended names in the slot, locked in a loop: the history check.
	stop := make(chan struct{})
	var inside [3]atomic.Int32
	var sections, overlaps atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := w % 3
			m, err := c.NewMutex(fmt.Sprintf("%s:busy:%d", tag, k), distlock.WithTTL(ttl))
			if err != nil {
				errs <- err
				return
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				l, err := m.Lock(ctx)
				if err != nil {
					errs <- err
					return
				}
				if inside[k].Add(1) != 1 {
					overlaps.Add(1)
				}
				time.Sleep(2 * time.Millisecond)
				if time.Until(l.Until()) <= 0 {
					errs <- fmt.Errorf("a section outlived its validity")
				}
				inside[k].Add(-1)
				sections.Add(1)
				if err := l.Unlock(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}

	time.Sleep(ttl / 2)
	mig, err := cl.BeginMigration(slot, to)
	require.NoError(t, err)
	keys, err := redis.Strings(from.Do("CLUSTER", "GETKEYSINSLOT", slot, 1000))
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	for _, k := range keys[:len(keys)/2] { // half the keys move; a lease renewed now has keys on both nodes
		require.NoError(t, mig.MoveKey(k))
		time.Sleep(ttl / 20)
	}
	before := sections.Load()
	time.Sleep(ttl) // renewals and acquisitions with the slot half moved
	mid := sections.Load()
	for i := range 5 { // new names, during the move
		l, err := newMutex(t, c, fmt.Sprintf("%s:new:%d", tag, i)).Lock(ctx)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))
	}
	require.NoError(t, mig.Finish())
	time.Sleep(2 * ttl) // renewals on the new node
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assert.Zero(t, overlaps.Load(), "two holders of one name at once")
	assert.Greater(t, mid, before, "sections ran with the slot half moved")
	assert.Greater(t, sections.Load(), mid, "sections ran after the move")
	for _, l := range held {
		require.NoError(t, l.Err(), "held across the move")
	}
	released := time.Now()
	require.NoError(t, held[0].Unlock(ctx))
	select {
	case at, ok := <-waited:
		require.True(t, ok)
		assert.Less(t, at.Sub(released), 2*time.Second, "the waiter was woken")
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not get the lock")
	}
	for _, l := range held[1:] {
		require.NoError(t, l.Unlock(ctx))
	}
	for _, ev := range log.of(distlock.EventLost) {
		t.Errorf("lease lost: %s: %v", ev.Name, ev.Err)
	}
	n, err := redis.Int(to.Do("CLUSTER", "COUNTKEYSINSLOT", slot))
	require.NoError(t, err)
	assert.Zero(t, n, "keys left in the slot")
}
