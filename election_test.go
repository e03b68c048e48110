package distlock_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// fastRetry retries every millisecond: tests that hand a lock around many
// times use it to run quickly.
func fastRetry() backoff.BackOff { return backoff.NewConstantBackOff(time.Millisecond) }

type node struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// TestElection: 5 candidates on 3 masters. One lead runs at a time; when the
// leader's process dies (its Client closes, no Resign), another leads within
// one TTL plus one backoff step; Observe sees every leader in order.
func TestElection(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	name := lockName(t)
	const ttl = 500 * time.Millisecond
	opts := []distlock.Option{distlock.WithTTL(ttl)}

	observer, err := distlock.NewElection[node](newClient(t, addrs), name, nil, opts...)
	require.NoError(t, err)
	obsCtx, stopObs := context.WithCancel(context.Background())
	var (
		obsMu    sync.Mutex
		observed []string
	)
	obsDone := make(chan struct{})
	go func() {
		defer close(obsDone)
		for l := range observer.Observe(obsCtx) {
			if l.Vacant {
				continue
			}
			obsMu.Lock()
			observed = append(observed, l.Value.ID)
			obsMu.Unlock()
		}
	}()

	var (
		active, overlaps atomic.Int32
		elected          = make(chan string, 16)
		clients          = map[string]*distlock.Client{}
		wg               sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 5 {
		id := fmt.Sprintf("candidate-%d", i)
		c, err := newUnfencedClient(addrs)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		clients[id] = c
		e, err := distlock.NewElection[node](c, name, nil, opts...)
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = e.Run(ctx, node{ID: id, Addr: "10.0.0.1:80"}, func(ctx context.Context) error {
				if active.Add(1) > 1 {
					overlaps.Add(1)
				}
				elected <- id
				<-ctx.Done() // lead until leadership ends
				active.Add(-1)
				return ctx.Err()
			})
		}()
	}
	next := func() string {
		select {
		case id := <-elected:
			return id
		case <-time.After(10 * time.Second):
			t.Fatal("no leader elected")
			return ""
		}
	}

	leader := next()
	order := []string{leader}
	for range 4 {
		got, ok, err := observer.Leader(context.Background())
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, leader, got.ID, "Leader reports the running leader")

		killed := time.Now()
		require.NoError(t, clients[leader].Close()) // the leader's process dies, without Resign
		leader = next()
		assert.Less(t, time.Since(killed), ttl+distlock.DefaultRetryMax+200*time.Millisecond,
			"a new leader within one TTL plus one backoff step")
		order = append(order, leader)
	}
	cancel()
	wg.Wait()
	assert.Zero(t, overlaps.Load(), "two leads ran at once")

	require.Eventually(t, func() bool {
		obsMu.Lock()
		defer obsMu.Unlock()
		return len(observed) >= len(order)
	}, 5*time.Second, 10*time.Millisecond, "Observe delivers every leader")
	stopObs()
	recv(t, obsDone, "Observe's channel closes")
	assert.Equal(t, order, observed, "Observe delivers every leader, in order")
}

func TestElectionResign(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	c := newClient(t, distlocktest.Addrs(servers))
	name := lockName(t)
	e, err := distlock.NewElection[string](c, name, nil)
	require.NoError(t, err)
	assert.ErrorIs(t, e.Resign(context.Background()), distlock.ErrNotHeld, "not leading")

	leading, ran := runLeader(context.Background(), e, "me")
	recv(t, leading, "leading")
	v, ok, err := e.Leader(context.Background())
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "me", v)

	require.NoError(t, e.Resign(context.Background()))
	require.NoError(t, recv(t, ran, "Run"), "Run returns nil after Resign")
	_, ok, err = e.Leader(context.Background())
	require.NoError(t, err)
	assert.False(t, ok, "no leader after resigning")
	eventuallyHolders(t, servers, name, 0, "the lock is released")
	eventuallyHolders(t, servers, distlock.KeyOf("leader", name), 0, "the record is retracted")
}

// TestElectionRunOutlivesTransientFaults: a fencing read that fails on 2
// of 3 masters makes Run step down and campaign again, not return; and
// when ctx ends, Run returns ctx.Err() itself.
func TestElectionRunOutlivesTransientFaults(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	fence := distlock.KeyOf("fence", name)
	for _, s := range servers[:2] {
		_, err := s.Do("SET", fence, "-5") // acquire increments it; Token cannot read it
		require.NoError(t, err)
	}
	e, err := distlock.NewElection[string](c, name, nil,
		distlock.WithRetry(func() backoff.BackOff { return backoff.NewConstantBackOff(50 * time.Millisecond) }))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leading := make(chan struct{})
	ran := make(chan error, 1)
	go func() {
		ran <- e.Run(ctx, "me", func(ctx context.Context) error {
			close(leading)
			<-ctx.Done()
			return errors.New("lead's own error after ctx ended")
		})
	}()
	silent(t, ran, 300*time.Millisecond, "Run returned while its context was live")
	for _, s := range servers[:2] {
		_, err := s.Do("DEL", fence)
		require.NoError(t, err)
	}
	recv(t, leading, "elected once the fault passed")
	cancel()
	err = recv(t, ran, "Run")
	assert.Equal(t, context.Canceled, err, "ctx.Err() itself")
}

// TestElectionRunReturnsCtxErrWhileCampaigning: ctx ending while another
// candidate leads returns ctx.Err() itself, not a wrapped Lock error.
func TestElectionRunReturnsCtxErrWhileCampaigning(t *testing.T) {
	_, c := cluster(t, 3)
	name := lockName(t)
	holder, err := newMutex(t, c, name).TryLock(context.Background())
	require.NoError(t, err)
	defer holder.Unlock(context.Background())
	e, err := distlock.NewElection[string](c, name, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = e.Run(ctx, "me", func(context.Context) error { return nil })
	assert.Equal(t, context.DeadlineExceeded, err)
}

// connections returns the number of clients connected to s.
func connections(t *testing.T, s *distlocktest.Server) int {
	t.Helper()
	v, err := s.Do("INFO", "clients")
	require.NoError(t, err)
	for _, line := range strings.Split(string(v.([]byte)), "\r\n") {
		if n, ok := strings.CutPrefix(line, "connected_clients:"); ok {
			k, err := strconv.Atoi(n)
			require.NoError(t, err)
			return k
		}
	}
	t.Fatal("no connected_clients in INFO")
	return 0
}

// TestObserversCostNoLockCapacity: 16 observers share the Client's one
// subscriber connection per master; 8 workers keep locking through a master
// restart: every Lock succeeds in its usual time, the master is re-admitted,
// and the connection count does not grow with the observers.
func TestObserversCostNoLockCapacity(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(testTimeout))
	name := lockName(t)
	e, err := distlock.NewElection[string](c, name+":e", nil)
	require.NoError(t, err)
	// Warm up: the lock pipeline and the subscriber connection are open.
	got := lockAsync(context.Background(), newMutex(t, c, name))
	require.NoError(t, recv(t, got, "first lock"))
	first := e.Observe(context.Background())
	recv(t, first, "the first observer's first report")
	before := connections(t, servers[1])

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 16 {
		obs := e.Observe(ctx)
		go func() {
			for range obs {
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	assert.LessOrEqual(t, connections(t, servers[1]), before+1, "16 observers open no connection of their own")

	var slowest atomic.Int64
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		time.Sleep(300 * time.Millisecond)
		_ = servers[0].Restart()
	}()
	m := newMutex(t, c, name)
	inParallel(t, 8, func(int) error {
		deadline := time.Now().Add(1500 * time.Millisecond)
		for time.Now().Before(deadline) {
			start := time.Now()
			lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
			lease, err := m.Lock(lctx)
			lcancel()
			if err != nil {
				return err
			}
			if d := int64(time.Since(start)); d > slowest.Load() {
				slowest.Store(d)
			}
			if err := lease.Unlock(context.Background()); err != nil {
				return err
			}
		}
		return nil
	})
	recv(t, restarted, "the restart")
	t.Logf("slowest Lock: %v", time.Duration(slowest.Load()))
	require.Eventually(t, func() bool {
		lease, err := m.TryLock(context.Background())
		if err != nil {
			return false
		}
		ok := holders(t, servers, name) == 3
		_ = lease.Unlock(context.Background())
		return ok
	}, 10*time.Second, 50*time.Millisecond, "the restarted master is re-admitted")
	assert.LessOrEqual(t, connections(t, servers[1]), before+1, "no connection count grows")
}

// TestObserveReportsVacancies: a follower tells "no leader" from "the same
// leader": Observe reports the vacancy at start, each leader, a vacancy
// after Resign, and a vacancy (by its periodic read) after a leader whose
// Client closed without resigning.
func TestObserveReportsVacancies(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	name := lockName(t)
	opts := []distlock.Option{distlock.WithTTL(500 * time.Millisecond)}
	watcher, err := distlock.NewElection[string](newClient(t, addrs), name, nil, opts...)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reports := watcher.Observe(ctx)
	assert.Equal(t, distlock.Leadership[string]{Vacant: true}, recv(t, reports, "the first report"))

	cA := newClient(t, addrs)
	a, err := distlock.NewElection[string](cA, name, nil, opts...)
	require.NoError(t, err)
	leadingA, ranA := runLeader(ctx, a, "A")
	l := recv(t, reports, "A leads")
	recv(t, leadingA, "A's lead runs")
	assert.Equal(t, "A", l.Value)
	assert.False(t, l.Vacant)
	until, ok := a.Leading()
	assert.True(t, ok, "A knows it leads, without the network")
	assert.True(t, until.After(time.Now()))
	_, ok = watcher.Leading()
	assert.False(t, ok)

	require.NoError(t, a.Resign(context.Background()))
	require.NoError(t, recv(t, ranA, "A's Run"))
	v := recv(t, reports, "vacancy after Resign")
	assert.True(t, v.Vacant)
	assert.Equal(t, l.Term, v.Term, "the term that ended")
	_, ok = a.Leading()
	assert.False(t, ok, "not after Resign")

	cB := newClient(t, addrs)
	b, err := distlock.NewElection[string](cB, name, nil, opts...)
	require.NoError(t, err)
	runLeader(ctx, b, "B")
	l = recv(t, reports, "B leads")
	assert.Equal(t, "B", l.Value)
	assert.Greater(t, l.Term, v.Term)
	require.NoError(t, cB.Close()) // B steps down as Close ends its lease, or the periodic read finds the record ownerless
	v = recv(t, reports, "vacancy after B's Client closed")
	assert.True(t, v.Vacant)
}

// TestObserveEndsWithClient: Observe's channel closes when the Client is
// closed, and Observe after Close returns a closed channel.
func TestObserveEndsWithClient(t *testing.T) {
	c, err := distlock.NewClient(masters)
	require.NoError(t, err)
	e, err := distlock.NewElection[string](c, lockName(t), nil)
	require.NoError(t, err)
	reports := e.Observe(context.Background())
	recv(t, reports, "the first report")
	require.NoError(t, c.Close())
	for range reports { // drains, then ends
	}
	_, open := <-e.Observe(context.Background())
	assert.False(t, open)
}

// TestResignAfterLossEndsRun: Resign that returns nil ends Run with nil,
// even when the lease was already lost (lead's ctx ended) when it came: Run
// does not campaign again.
func TestResignAfterLossEndsRun(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	e, err := distlock.NewElection[string](c, name, nil, distlock.WithTTL(600*time.Millisecond))
	require.NoError(t, err)
	var leads atomic.Int32
	resigned := make(chan error, 1)
	ran := make(chan error, 1)
	go func() {
		ran <- e.Run(context.Background(), "me", func(ctx context.Context) error {
			if leads.Add(1) > 1 {
				<-ctx.Done()
				return errors.New("second term")
			}
			for _, s := range servers { // the lease is lost: its keys are gone
				_, _ = s.Do("DEL", name)
			}
			<-ctx.Done()
			resigned <- e.Resign(context.Background()) // the app decides to step down for good
			return nil
		})
	}()
	require.NoError(t, recv(t, resigned, "Resign"), "Resign says it worked")
	select {
	case err := <-ran:
		t.Logf("Run returned %v", err)
	case <-time.After(3 * time.Second):
		t.Errorf("Run did not return after a Resign that returned nil; lead called %d times; Leading: %v", leads.Load(), func() bool { _, ok := e.Leading(); return ok }())
		_ = e.Resign(context.Background())
		recv(t, ran, "Run")
	}
}

// TestElectionRetryPolicyPerTerm: Run takes a fresh retry policy for each
// term, so a policy with a time or count budget is not spent across
// unrelated faults, and a later single transient fault does not make Run
// return while ctx is live.
func TestElectionRetryPolicyPerTerm(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	fence := distlock.KeyOf("fence", name)
	poison := func() {
		for _, s := range servers[:2] {
			_, err := s.Do("SET", fence, "-5")
			require.NoError(t, err)
		}
	}
	heal := func() {
		for _, s := range servers[:2] {
			_, err := s.Do("DEL", fence)
			require.NoError(t, err)
		}
	}
	e, err := distlock.NewElection[string](c, name, nil, distlock.WithTTL(600*time.Millisecond),
		distlock.WithRetry(func() backoff.BackOff {
			return backoff.NewExponentialBackOff(backoff.WithInitialInterval(50*time.Millisecond), backoff.WithMaxElapsedTime(time.Second))
		}))
	require.NoError(t, err)
	poison()
	var terms atomic.Int32
	leading := make(chan struct{}, 4)
	ran := make(chan error, 1)
	go func() {
		ran <- e.Run(context.Background(), "me", func(ctx context.Context) error {
			terms.Add(1)
			leading <- struct{}{}
			<-ctx.Done()
			return nil
		})
	}()
	time.Sleep(200 * time.Millisecond) // fault 1: a few retries
	heal()
	recv(t, leading, "first term")
	time.Sleep(1500 * time.Millisecond) // lead well for a while
	poison()                            // fault 2 (transient) and the lease lost
	for _, s := range servers {
		_, _ = s.Do("DEL", name)
	}
	go func() { time.Sleep(300 * time.Millisecond); heal() }()
	select {
	case err := <-ran:
		t.Errorf("Run returned while ctx live, after one transient fault: %v", err)
	case <-leading:
		t.Log("second term")
	case <-time.After(5 * time.Second):
		t.Error("neither")
	}
}

// TestResignAsSoonAsObserved: a leader that Observe reports can be made to
// resign at once, even if its record was announced a moment before lead
// started: Resign then returns nil, lead never runs or is cancelled, and Run
// returns nil.
func TestResignAsSoonAsObserved(t *testing.T) {
	_, c := cluster(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 20 {
		name := fmt.Sprintf("%s:%d", lockName(t), i)
		e, err := distlock.NewElection[string](c, name, nil)
		require.NoError(t, err)
		watcher, err := distlock.NewElection[string](c, name, nil)
		require.NoError(t, err)
		obs := watcher.Observe(ctx)
		ran := make(chan error, 1)
		go func() { ran <- e.Run(ctx, "me", func(ctx context.Context) error { <-ctx.Done(); return nil }) }()
		for l := range obs {
			if !l.Vacant {
				break
			}
		}
		require.NoError(t, e.Resign(ctx), "round %d: the observed leader resigns", i)
		require.NoError(t, recv(t, ran, "Run"))
	}
}
