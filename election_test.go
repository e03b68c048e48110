package distlock_test

import (
	"context"
	"errors"
	"fmt"
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
		for n := range observer.Observe(obsCtx) {
			obsMu.Lock()
			observed = append(observed, n.ID)
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
		c, err := distlock.NewClient(addrs)
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

	leading := make(chan struct{})
	ran := make(chan error, 1)
	go func() {
		ran <- e.Run(context.Background(), "me", func(ctx context.Context) error {
			close(leading)
			<-ctx.Done()
			return nil
		})
	}()
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
