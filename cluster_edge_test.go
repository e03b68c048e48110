package distlock_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// The cluster's edge cases, each found by an adversarial review (each test
// failed before its fix).

// nameWith returns a name, prefixed by prefix, in a slot that node owns.
func nameWith(t *testing.T, cl *distlocktest.Cluster, node *distlocktest.Server, prefix string) string {
	t.Helper()
	for i := 0; ; i++ {
		n := fmt.Sprintf("%s:%d", prefix, i)
		if cl.NodeFor(n) == node {
			return n
		}
	}
}

// TestClusterReleaseBehindAcquire: an acquire is in flight to the node
// the Client's slot map names (the slot has moved away from it), the map is
// refreshed meanwhile (any MOVED kicks a refresh), and the round's context
// ends: cleanUp's release is routed by the new map straight to the new
// owner and runs there first; the acquire then comes back MOVED and is
// re-sent to the new owner, after its release. The key is left set by
// nobody until its TTL: the promise that "a release queued behind its own
// acquire takes effect after it" does not hold across a map change.
func TestClusterReleaseBehindAcquire(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3)
	nodes := cl.Nodes()
	c := newClient(t, cl.Addrs()[:1], distlock.WithMasterTimeout(3*time.Second))
	ctx := context.Background()
	base := lockName(t)
	// Routing on: a name on node 1 gets MOVED from the seed (node 0).
	warm := nameWith(t, cl, nodes[1], base+":warm")
	l, err := newMutex(t, c, warm).Lock(ctx)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))
	time.Sleep(300 * time.Millisecond) // the map is read

	name := nameWith(t, cl, nodes[1], base+":victim")
	kick := nameWith(t, cl, nodes[0], base+":kick")
	require.NoError(t, cl.MigrateSlot(cl.SlotOf(name), nodes[2]))
	require.NoError(t, cl.MigrateSlot(cl.SlotOf(kick), nodes[2]))

	require.NoError(t, nodes[1].Pause())
	resumed := false
	defer func() {
		if !resumed {
			_ = nodes[1].Resume()
		}
	}()
	go func() {
		time.Sleep(100 * time.Millisecond)
		// The seed answers MOVED: the map is read again (from the seed).
		if l, err := newMutex(t, c, kick).TryLock(ctx); err == nil {
			_ = l.Unlock(ctx)
		}
	}()
	tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err = newMutex(t, c, name, distlock.WithTTL(20*time.Second)).TryLock(tctx)
	require.Error(t, err, "node 1 is paused")
	time.Sleep(200 * time.Millisecond) // the release is sent
	require.NoError(t, nodes[1].Resume())
	resumed = true
	time.Sleep(time.Second) // node 1 answers MOVED; the acquire is re-sent to node 2

	ttl, err := redis.Int(nodes[2].Do("PTTL", name))
	require.NoError(t, err)
	require.Equal(t, -2, ttl, "the lock key is left set after the failed TryLock (PTTL %d ms): its release overtook its acquire", ttl)
	// Another client cannot have the name until the TTL ends.
	other := newClient(t, cl.Addrs()[:1])
	_, err = newMutex(t, other, name).TryLock(ctx)
	require.NoError(t, err, "the name is stranded")
}

// TestClusterGivenTwice: two masters given as two nodes of one Redis
// Cluster are one failure domain counted twice toward the quorum. NewClient
// cannot see it (it does not dial); once both masters route, the Client
// reports it, as a master warning that names both.
func TestClusterGivenTwice(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3)
	plain := distlocktest.NewServer(t)
	log := &recorder{}
	c := newClient(t, []string{cl.Addrs()[0], cl.Addrs()[1], plain.Addr()}, distlock.WithObserver(log.observe))
	ctx := context.Background()
	for i := range 20 { // names on every node: both masters get MOVED, and route
		l, err := newMutex(t, c, fmt.Sprintf("%s:%d", lockName(t), i)).Lock(ctx)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))
	}
	ev := log.await(t, "the shared cluster reported", func(ev distlock.Event) bool {
		return ev.Kind == distlock.EventMasterWarning && ev.Err != nil && strings.Contains(ev.Err.Error(), "nodes of one Redis Cluster")
	})
	require.ErrorContains(t, ev.Err, cl.Addrs()[0])
	require.ErrorContains(t, ev.Err, cl.Addrs()[1])
}

// TestClusterFirstSeedDown: a master given as several seed nodes whose
// first seed is down: the other seeds are only read by the refresher,
// which starts at the first MOVED, which never comes; every name fails
// though the cluster (full coverage off) serves all but the dead node's
// slots.
func TestClusterFirstSeedDown(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3, "--cluster-require-full-coverage", "no")
	nodes := cl.Nodes()
	require.NoError(t, cl.KillNode(0))
	c := newClient(t, []string{cl.Addrs()[0] + "," + cl.Addrs()[1]})
	name := nameWith(t, cl, nodes[1], lockName(t))
	var lerr error
	for range 10 { // time for the cluster to see node 0 fail
		var l *distlock.Lease
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l, lerr = newMutex(t, c, name).TryLock(ctx)
		cancel()
		if lerr == nil {
			require.NoError(t, l.Unlock(context.Background()))
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	require.NoError(t, lerr, "a name on a live node, with a live seed given")
}

// TestClusterNodeDownNamed: in a 3-node cluster without full coverage, node 2
// dies: its names fail with an error naming it, the others keep working,
// and the refresher reads the map about once a second, not in a loop.
func TestClusterNodeDownNamed(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3, "--cluster-require-full-coverage", "no")
	nodes := cl.Nodes()
	c := newClient(t, cl.Addrs()[:1])
	ctx := context.Background()
	base := lockName(t)
	for i, n := range nodes { // routing on, every node known
		l, err := newMutex(t, c, nameWith(t, cl, n, fmt.Sprintf("%s:warm%d", base, i))).Lock(ctx)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))
	}
	require.NoError(t, cl.KillNode(2))
	slotsCalls := func() int {
		v, err := redis.String(nodes[0].Do("INFO", "commandstats"))
		require.NoError(t, err)
		var calls int
		for _, line := range splitLines(v) {
			if _, err := fmt.Sscanf(line, "cmdstat_cluster|slots:calls=%d", &calls); err == nil {
				return calls
			}
		}
		return 0
	}
	dead := nameWith(t, cl, nodes[2], base+":dead")
	live := nameWith(t, cl, nodes[1], base+":live")
	tctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err := newMutex(t, c, dead).TryLock(tctx)
	cancel()
	require.Error(t, err)
	first := err
	before := slotsCalls()
	for range 30 {
		l, err := newMutex(t, c, live).TryLock(ctx)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))
		time.Sleep(100 * time.Millisecond)
	}
	calls := slotsCalls() - before
	t.Logf("CLUSTER SLOTS on the seed in 3s: %d", calls)
	require.LessOrEqual(t, calls, 8, "the refresher spins")
	tctx, cancel = context.WithTimeout(ctx, time.Second)
	_, err = newMutex(t, c, dead).TryLock(tctx)
	cancel()
	require.Error(t, err)
	t.Logf("dead node's name, later: %v", err)
	require.Contains(t, err.Error(), nodes[2].Addr(), "the later error names the node")
	require.Contains(t, first.Error(), nodes[2].Addr(), "the first error names the node")
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			line := s[start:i]
			if len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
			}
			out = append(out, line)
			start = i + 1
		}
	}
	return out
}

// TestClusterCloseUnderRedirects: Clients closed at various moments while
// names on every node are locked in a loop, a slot is half moved (ASK) and
// then moved (MOVED), and a node is down: no goroutine is left.
func TestClusterCloseUnderRedirects(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3, "--cluster-require-full-coverage", "no")
	nodes := cl.Nodes()
	base := lockName(t)
	ignore := goleak.IgnoreCurrent()
	tag := ""
	for i := 0; tag == ""; i++ { // a hash tag in a slot of node 1
		if x := fmt.Sprintf("{%s:%d}", base, i); cl.NodeFor(x) == nodes[1] {
			tag = x
		}
	}
	mig, err := cl.BeginMigration(cl.SlotOf(tag), nodes[2])
	require.NoError(t, err)
	for round := range 6 {
		c, err := newUnfencedClient(cl.Addrs()[:1], distlock.WithMasterTimeout(300*time.Millisecond))
		require.NoError(t, err)
		stop := make(chan struct{})
		done := make(chan struct{})
		for w := range 8 {
			go func() {
				defer func() { done <- struct{}{} }()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					name := fmt.Sprintf("%s:%d:%d:%d", base, round, w, i)
					if w%2 == 0 {
						name = fmt.Sprintf("%s:%d:%d:%d", tag, round, w, i)
					}
					m, err := c.NewMutex(name, distlock.WithTTL(time.Second))
					if err != nil {
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
					if l, err := m.TryLock(ctx); err == nil && i%3 != 0 {
						_ = l.Unlock(ctx)
					}
					cancel()
				}
			}()
		}
		time.Sleep(time.Duration(50+round*70) * time.Millisecond)
		if round == 3 {
			require.NoError(t, mig.MoveKeys())
			require.NoError(t, mig.Finish())
		}
		if round == 4 {
			require.NoError(t, cl.KillNode(0+1))
			time.Sleep(100 * time.Millisecond)
		}
		start := time.Now()
		require.NoError(t, c.Close())
		t.Logf("round %d: Close took %v", round, time.Since(start))
		close(stop)
		for range 8 {
			<-done
		}
	}
	time.Sleep(100 * time.Millisecond)
	goleak.VerifyNone(t, ignore)
}

// TestClusterSeedByHostName: a seed given by a host name (localhost) while the
// cluster announces its IP: the route keys its nodes by the spelling, so
// the seed node gets a second transport (another connection, fence and
// queue) under its IP, and commands for its slots travel on either.
func TestClusterSeedByHostName(t *testing.T) {
	cl := distlocktest.NewCluster(t, 3)
	nodes := cl.Nodes()
	_, port, _ := net.SplitHostPort(nodes[0].Addr())
	c := newClient(t, []string{"localhost:" + port})
	ctx := context.Background()
	for i, n := range nodes {
		l, err := newMutex(t, c, nameWith(t, cl, n, fmt.Sprintf("%s:%d", lockName(t), i))).Lock(ctx)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))
	}
	time.Sleep(300 * time.Millisecond)
	var addrs []string
	for _, ns := range c.Stats().Masters[0].Nodes {
		addrs = append(addrs, ns.Addr)
	}
	require.Len(t, addrs, 2, "transports besides the seed: %v (the seed's node twice)", addrs)
}

// TestClusterReleaseKeptForPromotedReplica: a node dies, its replica takes over
// its slots. A release sent while the node was down is kept by the dead
// node's transport, to be sent "when it answers again", which it never
// does: it is never routed to the new owner of the slot, where the lock key
// (replicated) stays until its TTL.
func TestClusterReleaseKeptForPromotedReplica(t *testing.T) {
	t.Parallel() // mostly waiting: for nodes to fail over, TTLs, fences
	cl := distlocktest.NewCluster(t, 3, "--cluster-require-full-coverage", "no")
	nodes := cl.Nodes()
	rep := distlocktest.NewServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", "1000", "--cluster-announce-ip", "127.0.0.1")
	host, port, _ := net.SplitHostPort(rep.Addr())
	_, err := nodes[0].Do("CLUSTER", "MEET", host, port)
	require.NoError(t, err)
	id, err := redis.String(nodes[2].Do("CLUSTER", "MYID"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := rep.Do("CLUSTER", "REPLICATE", id)
		return err == nil
	}, 10*time.Second, 100*time.Millisecond)
	require.Eventually(t, func() bool {
		v, _ := redis.String(rep.Do("INFO", "replication"))
		return strings.Contains(v, "master_link_status:up")
	}, 10*time.Second, 100*time.Millisecond)

	c := newClient(t, cl.Addrs()[:1], distlock.WithMasterTimeout(300*time.Millisecond))
	ctx := context.Background()
	name := nameWith(t, cl, nodes[2], lockName(t))
	l, err := newMutex(t, c, name, distlock.WithTTL(30*time.Second), distlock.WithoutRenewal()).Lock(ctx)
	require.NoError(t, err)
	n, err := redis.Int(nodes[2].Do("WAIT", 1, 2000))
	require.NoError(t, err)
	require.Equal(t, 1, n, "replicated")

	require.NoError(t, cl.KillNode(2))
	uctx, cancel := context.WithTimeout(ctx, time.Second)
	err = l.Unlock(uctx) // the node is down: the release is kept for it
	cancel()
	t.Logf("Unlock with the node down: %v", err)
	_, err = rep.Do("CLUSTER", "FAILOVER", "TAKEOVER")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		v, _ := redis.String(rep.Do("INFO", "replication"))
		return strings.Contains(v, "role:master")
	}, 10*time.Second, 50*time.Millisecond)
	time.Sleep(3 * time.Second) // the Client's refresher follows the slots to the replica

	other := newClient(t, cl.Addrs()[:1])
	ol, err := newMutex(t, other, name).TryLock(ctx)
	pttl, _ := redis.Int(rep.Do("PTTL", name))
	require.NoError(t, err, "the name is stranded on the promoted replica (PTTL %d ms): the kept release went nowhere", pttl)
	require.NoError(t, ol.Unlock(ctx))
}

// wokenPromptly locks name in c as holder, starts a waiter in w (another
// Client: a Client wakes its own waiters without the announcement) with a
// 5s backoff, releases, and checks the waiter got the lock well within its
// backoff: woken by the release announcement.
func wokenPromptly(t *testing.T, c, w *distlock.Client, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder, err := newMutex(t, c, name, distlock.WithTTL(30*time.Second)).Lock(ctx)
	require.NoError(t, err)
	got := lockAsync(ctx, newMutex(t, w, name, distlock.WithRetry(slowRetry)))
	require.Eventually(t, func() bool { return w.Stats().Waiting == 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(300 * time.Millisecond) // subscribed
	released := time.Now()
	require.NoError(t, holder.Unlock(ctx))
	wokenAtOnce(t, got, released)
}

// TestClusterAnnouncedBeforeRouting: a cluster node's releases announced
// before the Client routes by slot (a one-node cluster never does; a
// several-node cluster not before its first MOVED) reach the waiters of
// another Client: the scripts use PUBLISH until the Client subscribes by
// slot.
func TestClusterAnnouncedBeforeRouting(t *testing.T) {
	t.Run("one node", func(t *testing.T) {
		cl := distlocktest.NewCluster(t, 1)
		wokenPromptly(t, newClient(t, cl.Addrs()), newClient(t, cl.Addrs()), lockName(t))
	})
	t.Run("the seed's slots", func(t *testing.T) {
		cl := distlocktest.NewCluster(t, 3)
		name := nameOn(t, cl, cl.Nodes()[0])
		wokenPromptly(t, newClient(t, cl.Addrs()[:1]), newClient(t, cl.Addrs()[:1]), name)
	})
}

// TestClusterElectionObservedOnOneNode: on a one-node cluster, an
// observer of an Election is told of a new leader by its announcement, not
// by its read every TTL.
func TestClusterElectionObservedOnOneNode(t *testing.T) {
	cl := distlocktest.NewCluster(t, 1)
	name := lockName(t)
	opts := []distlock.Option{distlock.WithTTL(10 * time.Second)}
	observer, err := distlock.NewElection[node](newClient(t, cl.Addrs()), name, nil, opts...)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obs := observer.Observe(ctx)
	first := <-obs
	require.True(t, first.Vacant)
	time.Sleep(300 * time.Millisecond) // subscribed
	cand, err := distlock.NewElection[node](newClient(t, cl.Addrs()), name, nil, opts...)
	require.NoError(t, err)
	started := time.Now()
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = cand.Run(ctx, node{ID: "a"}, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	}()
	select {
	case l := <-obs:
		require.False(t, l.Vacant)
		require.Less(t, time.Since(started), 2*time.Second, "told by the announcement, not the read every TTL")
	case <-ctx.Done():
		t.Fatal("never told")
	}
	cancel()
	<-ran
}
