package distlock_test

import (
	"context"
	"errors"
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
	t.Run("one seed", func(t *testing.T) { testManyNames(t, cl, []string{addrs[1]}, 3000) })
	t.Run("seeds", func(t *testing.T) { testManyNames(t, cl, []string{addrs[2] + "," + addrs[0]}, 600) })
}

func testManyNames(t *testing.T, cl *distlocktest.Cluster, addrs []string, names int) {
	log := &recorder{}
	c := newClient(t, addrs, distlock.WithObserver(log.observe))
	exercise(t, c, lockName(t)) // a waiter woken by the release announcement, a token, Inspect
	ctx := context.Background()
	ttl := time.Second
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

// nameOn returns a new lock name in a slot that node owns.
func nameOn(t *testing.T, cl *distlocktest.Cluster, node *distlocktest.Server) string {
	for {
		if n := lockName(t); cl.NodeFor(n) == node {
			return n
		}
	}
}

// TestClusterNodeKilled: a node of a 3-node cluster that keeps serving
// with a node down (cluster-require-full-coverage no) is killed. Names in
// its slots fail with an error that names the node; their holders are told
// their leases are lost; names on the other nodes keep being locked and
// renewed; and the seed itself may be the node killed.
func TestClusterNodeKilled(t *testing.T) {
	t.Parallel() // mostly waiting: for nodes to fail over, TTLs, fences
	for _, killed := range []int{2, 0} {
		t.Run(fmt.Sprintf("node %d of the seed 0", killed), func(t *testing.T) {
			cl := distlocktest.NewCluster(t, 3, "--cluster-require-full-coverage", "no")
			c := newClient(t, cl.Addrs()[:1])
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ttl := time.Second
			dead := cl.Nodes()[killed]
			var onDead *distlock.Lease
			var alive []*distlock.Lease
			for _, n := range cl.Nodes() {
				for range 5 {
					l, err := newMutex(t, c, nameOn(t, cl, n), distlock.WithTTL(ttl)).Lock(ctx)
					require.NoError(t, err)
					if n == dead {
						onDead = l
					} else {
						alive = append(alive, l)
					}
				}
			}
			require.NoError(t, cl.KillNode(killed))
			select {
			case <-onDead.Done():
				require.ErrorIs(t, onDead.Err(), distlock.ErrLeaseLost)
			case <-time.After(5 * ttl):
				t.Fatal("the holder of a lease on the dead node was not told")
			}
			if killed != 0 {
				// The master is up; the dead node is down in its Nodes.
				st := c.Stats().Masters[0]
				assert.Equal(t, "up", st.State)
				for _, ns := range st.Nodes {
					if ns.Addr == dead.Addr() {
						assert.Equal(t, "down", ns.State)
						assert.Contains(t, ns.Reason, dead.Addr())
					}
				}
			}
			short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
			_, err := newMutex(t, c, nameOn(t, cl, dead)).Lock(short)
			cancelShort()
			require.ErrorIs(t, err, distlock.ErrNotAcquired)
			assert.ErrorContains(t, err, dead.Addr(), "the error names the node")
			t.Log(err)
			for _, n := range cl.Nodes() {
				if n == dead {
					continue
				}
				for range 5 {
					l, err := newMutex(t, c, nameOn(t, cl, n)).Lock(ctx)
					require.NoError(t, err, "a name on a live node")
					require.NoError(t, l.Unlock(ctx))
				}
			}
			time.Sleep(2 * ttl)
			for _, l := range alive {
				require.NoError(t, l.Err(), "a lease on a live node")
				require.NoError(t, l.Unlock(ctx))
			}
		})
	}
}

// TestRedlockOverClusters: three independent 3-node clusters are the three
// masters of a Redlock. The quorum table holds with clusters as masters:
// names on every node are locked with all three up and with one whole
// cluster down, and their leases kept; with two down, no lock is taken and
// the leases held are lost.
func TestRedlockOverClusters(t *testing.T) {
	t.Parallel() // mostly waiting: for nodes to fail over, TTLs, fences
	var cls [3]*distlocktest.Cluster
	var wg sync.WaitGroup
	for i := range cls {
		wg.Add(1)
		go func() { // about two seconds each, at once
			defer wg.Done()
			cls[i], _ = distlocktest.StartCluster(3)
		}()
	}
	wg.Wait()
	var addrs []string
	for _, cl := range cls {
		if cl == nil {
			t.Fatal("a cluster did not start")
		}
		t.Cleanup(func() { cl.Close() })
		addrs = append(addrs, cl.Addrs()[0])
	}
	c := newClient(t, addrs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ttl := time.Second
	lockMany := func(n int) ([]*distlock.Lease, error) {
		var ls []*distlock.Lease
		for range n {
			l, err := newMutex(t, c, lockName(t), distlock.WithTTL(ttl)).Lock(ctx)
			if err != nil {
				return ls, err
			}
			ls = append(ls, l)
		}
		return ls, nil
	}
	held, err := lockMany(30)
	require.NoError(t, err, "three clusters up")
	require.NoError(t, cls[2].Close()) // a whole cluster down
	more, err := lockMany(30)
	require.NoError(t, err, "two clusters of three up")
	time.Sleep(2 * ttl)
	for _, l := range append(held, more...) {
		require.NoError(t, l.Err(), "kept with two clusters of three")
	}
	require.NoError(t, cls[1].Close()) // one cluster of three: no quorum
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	_, err = newMutex(t, c, lockName(t)).Lock(short)
	require.ErrorIs(t, err, distlock.ErrNotAcquired)
	var qe *distlock.QuorumError
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, 2, qe.Needed)
	for _, l := range held {
		select {
		case <-l.Done():
			require.ErrorIs(t, l.Err(), distlock.ErrLeaseLost)
		case <-time.After(5 * ttl):
			t.Fatal("a lease outlived the quorum")
		}
	}
}

// TestClusterFailoverFenced: a shard's master dies and the cluster promotes
// its replica. The Client follows the shard's slots to the replica, which
// is a new master for the restart fence: it does not count for the fence's
// length (it may lack the last writes of the master it replaces), then it
// serves the shard's names again.
func TestClusterFailoverFenced(t *testing.T) {
	t.Parallel() // mostly waiting: for nodes to fail over, TTLs, fences
	cl := distlocktest.NewCluster(t, 3)
	rep, err := cl.AddReplica(1)
	require.NoError(t, err)
	fence := 3 * time.Second
	log := &recorder{}
	c, err := distlock.NewClient(cl.Addrs()[:1], distlock.WithRestartFence(fence), distlock.WithObserver(log.observe))
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := nameOn(t, cl, cl.Nodes()[1])
	m := newMutex(t, c, name, distlock.WithTTL(time.Second))
	l, err := m.Lock(ctx) // waits out the first-contact fence of nodes started less than 3s ago
	require.NoError(t, err)
	require.NoError(t, cl.KillNode(1))
	select {
	case <-l.Done():
		require.ErrorIs(t, l.Err(), distlock.ErrLeaseLost)
	case <-time.After(10 * time.Second):
		t.Fatal("the holder was not told its shard's master died")
	}
	// The shard's names fail while its master is down, then, once the
	// replica took over, while the replica is fenced: never granted before.
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := m.TryLock(ctx)
		if err == nil {
			_ = l.Unlock(ctx)
			t.Fatal("acquired on the promoted replica before its fence")
		}
		if errors.Is(err, distlock.ErrMasterFenced) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the promoted replica was not fenced: %v", err)
		time.Sleep(50 * time.Millisecond)
	}
	fencedAt := time.Now()
	ev := log.await(t, "the promoted replica fenced", func(ev distlock.Event) bool {
		return ev.Kind == distlock.EventMasterFenced && ev.Master == rep.Addr()
	})
	assert.ErrorContains(t, ev.Err, "promoted")
	l, err = m.Lock(ctx)
	require.NoError(t, err, "served by the promoted replica after the fence")
	assert.Greater(t, time.Since(fencedAt), fence/2, "held off for the fence")
	require.NoError(t, l.Unlock(ctx))
	st := c.Stats().Masters[0]
	addrs := []string{}
	for _, n := range st.Nodes {
		addrs = append(addrs, n.Addr)
	}
	assert.Contains(t, addrs, rep.Addr())
}

// TestClusterShardedAnnouncements: on a cluster of several nodes, a
// waiter's release channel is subscribed with SSUBSCRIBE on the node that
// owns its slot, the release is announced there with SPUBLISH (never with
// PUBLISH, which the cluster bus would copy to every node), and the waiter
// is woken at once, well within its backoff and the holder's TTL. When the
// slot moves to another node while the waiter waits, the subscription
// follows it, and the waiter is still woken at once.
func TestClusterShardedAnnouncements(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3)
	// The holder and the waiter in two Clients: a Client wakes its own
	// waiters on its releases without the announcement.
	c, w := newClient(t, cl.Addrs()[:1]), newClient(t, cl.Addrs()[:1])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nodes := cl.Nodes()
	for _, move := range []bool{false, true} {
		name := nameOn(t, cl, nodes[2])
		holder, err := newMutex(t, c, name, distlock.WithTTL(30*time.Second)).Lock(ctx)
		require.NoError(t, err)
		got := lockAsync(ctx, newMutex(t, w, name, distlock.WithRetry(slowRetry)))
		owner := nodes[2]
		shardSubscribed := func() bool {
			v, err := redis.Strings(owner.Do("PUBSUB", "SHARDCHANNELS"))
			return err == nil && len(v) == 1 && strings.Contains(v[0], name)
		}
		require.Eventually(t, shardSubscribed, 5*time.Second, 5*time.Millisecond, "subscribed on the slot's node")
		if move {
			owner = nodes[1]
			require.NoError(t, cl.MigrateSlot(cl.SlotOf(name), owner))
			require.Eventually(t, shardSubscribed, 10*time.Second, 5*time.Millisecond, "the subscription followed the slot")
		}
		released := time.Now()
		require.NoError(t, holder.Unlock(ctx))
		wokenAtOnce(t, got, released)
		stats, err := redis.String(owner.Do("INFO", "commandstats"))
		require.NoError(t, err)
		assert.Contains(t, stats, "cmdstat_spublish:")
		assert.NotContains(t, stats, "cmdstat_publish:")
	}
}

// TestClusterWithoutShardedPubSub: a cluster whose nodes have no sharded
// pub/sub (Redis 6; here SPUBLISH and SSUBSCRIBE renamed away): releases
// are announced with PUBLISH instead, which the cluster copies to every
// node, and the seed's plain subscriber hears them: the waiter is still
// woken at once.
func TestClusterWithoutShardedPubSub(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3, "--rename-command", "SPUBLISH", "", "--rename-command", "SSUBSCRIBE", "")
	wokenPromptly(t, newClient(t, cl.Addrs()[:1]), newClient(t, cl.Addrs()[:1]), nameOn(t, cl, cl.Nodes()[2]))
	stats, err := redis.String(cl.Nodes()[2].Do("INFO", "commandstats"))
	require.NoError(t, err)
	assert.Contains(t, stats, "cmdstat_publish:", "announced with PUBLISH")
}

// TestClusterFromPoolRefusedClearly: a master given as a pool reaches one
// node of a cluster: a name in a slot another node owns fails at once (a
// permanent failure), with an error that says to give the address to
// NewClient.
func TestClusterFromPoolRefusedClearly(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3)
	addr := cl.Addrs()[0]
	pool := &redis.Pool{Dial: func() (redis.Conn, error) { return redis.Dial("tcp", addr) }}
	defer pool.Close()
	c, err := distlock.NewClientFromPools([]distlock.Pool{pool}, distlock.WithoutRestartFence())
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = newMutex(t, c, nameOn(t, cl, cl.Nodes()[1])).Lock(ctx)
	require.ErrorIs(t, err, distlock.ErrPermanent)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Lock stops at once")
	assert.ErrorContains(t, err, "MOVED")
	assert.ErrorContains(t, err, "give its address to NewClient")
}

// TestClusterTryAgain: a command whose keys a slot move has split between
// two nodes is refused with TRYAGAIN; it is sent again shortly, and
// succeeds once the move is done. Here a lease's fencing token is read
// while its lock key has moved and its counter has not.
func TestClusterTryAgain(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3)
	c := newClient(t, cl.Addrs()[:1])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := nameOn(t, cl, cl.Nodes()[0])
	l, err := newMutex(t, c, name).Lock(ctx)
	require.NoError(t, err)
	first, err := l.Token(ctx) // creates the counter
	require.NoError(t, err)
	mig, err := cl.BeginMigration(cl.SlotOf(name), cl.Nodes()[1])
	require.NoError(t, err)
	require.NoError(t, mig.MoveKey(name)) // the lock key moves, its counter stays
	done := make(chan error, 1)
	go func() {
		time.Sleep(60 * time.Millisecond)
		done <- mig.Finish()
	}()
	l2, err := newMutex(t, c, name+":other").Lock(ctx) // unrelated traffic goes on
	require.NoError(t, err)
	require.NoError(t, l2.Unlock(ctx))
	require.NoError(t, l.Unlock(ctx))
	l, err = newMutex(t, c, name).Lock(ctx)
	require.NoError(t, err)
	second, err := l.Token(ctx) // refused with TRYAGAIN until the move ends
	require.NoError(t, err)
	assert.Greater(t, second, first)
	require.NoError(t, <-done)
	require.NoError(t, l.Unlock(ctx))
}

// wokenAtOnce checks that a waiter with slowRetry's 5s backoff (lockAsync's
// got) got the lock well within its backoff of released: woken by the
// release announcement.
func wokenAtOnce(t *testing.T, got <-chan error, released time.Time) {
	t.Helper()
	select {
	case err := <-got:
		require.NoError(t, err)
		assert.Less(t, time.Since(released), time.Second, "woken by the announcement, not the 5s backoff")
	case <-time.After(20 * time.Second):
		t.Fatal("the waiter was not woken")
	}
}
