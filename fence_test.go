package distlock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// TestTokensStrictlyIncrease: 2 000 sequential acquisitions on 5 masters,
// with masters killed (a minority at a time) and restarted empty, and
// partial acquisitions that bump some counters without reaching a quorum:
// every token is higher than the one before.
func TestTokensStrictlyIncrease(t *testing.T) {
	servers, c := cluster(t, 5, distlock.WithMasterTimeout(testTimeout))
	name := lockName(t)
	m := newMutex(t, c, name, distlock.WithoutRenewal())
	rng := rand.New(rand.NewPCG(1, 2))
	var (
		last             uint64
		down             []*distlocktest.Server
		restarts, partia int
	)
	for i := range 2000 {
		switch {
		case i%100 == 50 && len(down) == 0:
			// A minority dies; it comes back empty 25 acquisitions later.
			for _, k := range rng.Perm(5)[:1+rng.IntN(2)] {
				require.NoError(t, servers[k].Kill())
				down = append(down, servers[k])
			}
		case i%100 == 75:
			for _, s := range down {
				require.NoError(t, s.Restart())
				restarts++
			}
			down = nil
		case rng.IntN(5) == 0:
			// Someone else holds the lock on 3 masters: this round fails after
			// setting (and incrementing the counter on) the other two.
			foreign := rng.Perm(5)[:3]
			for _, k := range foreign {
				_, _ = servers[k].Do("SET", name, "foreign", "PX", 60000)
			}
			_, err := m.TryLock(context.Background())
			require.ErrorIs(t, err, distlock.ErrLocked)
			for _, k := range foreign {
				_, _ = servers[k].Do("DEL", name)
			}
			partia++
		}
		var lease *distlock.Lease
		require.Eventually(t, func() bool { // masters just restarted may still be suspected
			var err error
			lease, err = m.TryLock(context.Background())
			return err == nil
		}, 5*time.Second, time.Millisecond)
		token, err := lease.Token(context.Background())
		require.NoError(t, err)
		require.Greater(t, token, last, "acquisition %d: token must increase", i)
		again, err := lease.Token(context.Background())
		require.NoError(t, err)
		require.Equal(t, token, again, "a lease has one token")
		last = token
		require.NoError(t, lease.Unlock(context.Background()))
	}
	t.Logf("last token %d; %d master restarts, %d partial acquisitions", last, restarts, partia)
	assert.Positive(t, restarts)
	assert.Positive(t, partia)
}

func TestTokenOfEndedLease(t *testing.T) {
	_, c := cluster(t, 3)
	lease, err := newMutex(t, c, lockName(t)).TryLock(context.Background())
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(context.Background()))
	_, err = lease.Token(context.Background())
	assert.ErrorIs(t, err, distlock.ErrNotHeld)
	var nilLease *distlock.Lease
	_, err = nilLease.Token(context.Background())
	assert.ErrorIs(t, err, distlock.ErrNotHeld)
}

// TestFencedLateWrite: A gets its token and is "paused" (its clock is a
// mock that does not move, so it still believes it holds the lock) while
// its keys expire; B acquires with a higher token and writes. When A wakes
// and writes, every master refuses it.
func TestFencedLateWrite(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	name := lockName(t)
	ca := newClient(t, distlocktest.Addrs(servers), distlock.WithClock(clock.NewMock()))
	cb := newClient(t, distlocktest.Addrs(servers))
	ga, err := distlock.NewGuarded[string](ca, name, nil, distlock.WithTTL(300*time.Millisecond))
	require.NoError(t, err)
	gb, err := distlock.NewGuarded[string](cb, name, nil)
	require.NoError(t, err)

	paused, resume := make(chan struct{}), make(chan struct{})
	errA := make(chan error, 1)
	go func() {
		errA <- ga.Update(context.Background(), func(ctx context.Context, v *string) error {
			close(paused)
			<-resume // A stops here while its lease runs out on the masters
			*v = "A's late write"
			return nil
		})
	}()
	recv(t, paused, "A's fn runs")
	require.NoError(t, gb.Update(context.Background(), func(ctx context.Context, v *string) error {
		*v = "B's write"
		return nil
	}))
	_, tokenB, err := gb.Load(context.Background())
	require.NoError(t, err)

	close(resume)
	errAUpdate := recv(t, errA, "A's Update")
	assert.ErrorIs(t, errAUpdate, distlock.ErrFenced)
	v, token, err := gb.Load(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "B's write", v)
	assert.Equal(t, tokenB, token)
	late := 0
	for _, s := range servers {
		stored, err := s.Do("HGET", distlock.KeyOf("value", name), "data")
		require.NoError(t, err)
		// A's late write needs A's key: it lands at most on a master where
		// A's key had not expired yet (then A was told ErrMaybeApplied),
		// never on a quorum, never where B holds the lock.
		if stored != nil && string(stored.([]byte)) == `"A's late write"` {
			late++
		}
	}
	assert.LessOrEqual(t, late, 1, "A's late write is on a minority at most")
	if late > 0 {
		assert.ErrorIs(t, errAUpdate, distlock.ErrMaybeApplied)
	}
}

// TestGuardedCounter: 8 processes (Clients) x 500 increments of a Guarded
// counter while masters are paused one at a time: the final value is exact.
func TestGuardedCounter(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	name := lockName(t)
	const procs, increments = 8, 500
	stop := make(chan struct{})
	stopPauses := sync.OnceFunc(func() { close(stop) })
	defer stopPauses() // also when a check below fails
	var pauses atomic.Int32
	go func() { // one master paused at a time, at random, for 20-100ms
		rng := rand.New(rand.NewPCG(3, 4))
		for {
			s := servers[rng.IntN(len(servers))]
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(50+rng.IntN(100)) * time.Millisecond):
			}
			_ = s.Pause()
			pauses.Add(1)
			time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
			_ = s.Resume()
		}
	}()
	counters := make([]*distlock.Guarded[int], procs) // one Client each, as separate processes
	for p := range counters {
		c := newClient(t, distlocktest.Addrs(servers), distlock.WithMasterTimeout(50*time.Millisecond))
		g, err := distlock.NewGuarded[int](c, name, nil, distlock.WithRetry(fastRetry))
		require.NoError(t, err)
		counters[p] = g
	}
	inParallel(t, procs, func(p int) error {
		for range increments {
			err := counters[p].Update(context.Background(), func(ctx context.Context, n *int) error {
				*n++
				return nil
			})
			if err != nil {
				return fmt.Errorf("process %d: %w", p, err)
			}
		}
		return nil
	})
	stopPauses()
	for _, s := range servers {
		_ = s.Resume()
	}
	g, err := distlock.NewGuarded[int](newClient(t, distlocktest.Addrs(servers)), name, nil)
	require.NoError(t, err)
	v, _, err := g.Load(context.Background())
	require.NoError(t, err)
	assert.Equal(t, procs*increments, v)
	t.Logf("%d increments with %d master pauses", v, pauses.Load())
}

// token can equal an earlier holder's.
func TestHealKeepsFencing(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(time.Second))
	name := lockName(t)
	fence := distlock.KeyOf("fence", name)
	for i, v := range []int{100, 100, 50} {
		_, err := servers[i].Do("SET", fence, v)
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m := newMutex(t, c, name, distlock.WithTTL(30*time.Second), distlock.WithoutRenewal())

	// L holds A and B; C is cut off.
	proxies[2].SetBlackhole(true)
	l, err := m.Lock(ctx)
	require.NoError(t, err)
	tokL, err := l.Token(ctx)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))
	proxies[2].SetBlackhole(false)

	// M acquires on A and C while B is cut off.
	proxies[1].SetBlackhole(true)
	time.Sleep(300 * time.Millisecond) // C re-admitted by its probe
	var lm *distlock.Lease
	require.Eventually(t, func() bool {
		lm, err = m.TryLock(ctx)
		return err == nil
	}, 5*time.Second, 50*time.Millisecond)
	proxies[1].SetBlackhole(false)

	// B comes back; an Extend heals M's key onto B (SET NX, no INCR). A is
	// a little slow, so that B's "missing" is counted before the quorum.
	proxies[0].SetLatency(150 * time.Millisecond)
	require.Eventually(t, func() bool {
		err := lm.Extend(ctx)
		v, _ := servers[1].Do("GET", name)
		t.Logf("extend: %v; B holds %v", err, v != nil)
		return v != nil
	}, 5*time.Second, 100*time.Millisecond)
	proxies[0].SetLatency(0)
	for i, s := range servers {
		v, _ := s.Do("GET", fence)
		t.Logf("fence counter on master %d: %s", i, v)
	}

	// A is slow: Token's fast quorum reads B and C.
	proxies[0].SetLatency(150 * time.Millisecond)
	tokM, err := lm.Token(ctx)
	require.NoError(t, err)
	proxies[0].SetLatency(0)
	t.Logf("earlier holder's token %d, later holder's token %d", tokL, tokM)
	assert.Greater(t, tokM, tokL, "fencing token did not increase")
	_ = lm.Unlock(ctx)
}

// TestFencedLateWriteBeforeNextHolderWrites: once a later holder has taken
// its fencing token, an earlier holder's late write is refused by every
// master that saw the later token, so it cannot reach a quorum, even though
// the later holder has not written yet: the later holder never reads it.
func TestFencedLateWriteBeforeNextHolderWrites(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	name := lockName(t)
	ca := newClient(t, distlocktest.Addrs(servers), distlock.WithClock(clock.NewMock())) // A's watchdog never fires
	cb := newClient(t, distlocktest.Addrs(servers))
	ga, err := distlock.NewGuarded[string](ca, name, nil, distlock.WithTTL(300*time.Millisecond))
	require.NoError(t, err)
	gb, err := distlock.NewGuarded[string](cb, name, nil)
	require.NoError(t, err)
	require.NoError(t, gb.Update(context.Background(), func(_ context.Context, v *string) error { *v = "before"; return nil }))

	paused, resume := make(chan struct{}), make(chan struct{})
	errA := make(chan error, 1)
	go func() {
		errA <- ga.Update(context.Background(), func(ctx context.Context, v *string) error {
			close(paused)
			<-resume // A stops here while its keys expire on the masters
			*v = "A's late write"
			return nil
		})
	}()
	recv(t, paused, "A's fn runs")
	// B takes the lock once A's keys expired, and its token; it has not
	// written anything.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leaseB, err := newMutex(t, cb, name).Lock(ctx)
	require.NoError(t, err)
	tokenB, err := leaseB.Token(ctx)
	require.NoError(t, err)
	// B got a quorum once A's keys expired on two masters; let the third
	// expire too (A's TTL is 300ms, its keys were set together).
	time.Sleep(100 * time.Millisecond)

	close(resume)
	err = recv(t, errA, "A's Update")
	assert.ErrorIs(t, err, distlock.ErrFenced)
	assert.NotErrorIs(t, err, distlock.ErrMaybeApplied, "refused everywhere: not applied")
	v, token, err := gb.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, "before", v, "B does not read A's late write")
	assert.Less(t, token, tokenB)
	require.NoError(t, leaseB.Unlock(ctx))
}

// TestGuardedWriteOutcomeUnknownIsSettled: when the write reaches the
// masters but their replies are lost, or reaches only one of three, Update
// sends the same write again while its lease holds, and returns nil once
// it is on a quorum: a caller never has to retry a change that was applied.
func TestGuardedWriteOutcomeUnknownIsSettled(t *testing.T) {
	for _, fault := range []string{"replies lost", "one master of three"} {
		t.Run(fault, func(t *testing.T) {
			_, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(300*time.Millisecond))
			name := lockName(t)
			g, err := distlock.NewGuarded[int](c, name, nil, distlock.WithTTL(10*time.Second))
			require.NoError(t, err)
			heal := make(chan struct{})
			err = g.Update(context.Background(), func(_ context.Context, v *int) error {
				*v++
				for _, p := range proxies[1:] { // the fault starts with the write
					if fault == "replies lost" {
						p.SetDropReplies(true)
					} else {
						p.SetBlackhole(true)
					}
				}
				go func() { // and ends a while later
					defer close(heal)
					time.Sleep(time.Second)
					for _, p := range proxies[1:] {
						p.SetDropReplies(false)
						p.SetBlackhole(false)
					}
				}()
				return nil
			})
			recv(t, heal, "the fault ends")
			require.NoError(t, err, "settled on a quorum while the lease held")
			v, _, err := g.Load(context.Background())
			require.NoError(t, err)
			assert.Equal(t, 1, v, "applied once")
		})
	}
}

// TestGuardedLostLeaseWritesNothing: a lease lost while fn runs sends no
// write, and the error says the change was not applied.
func TestGuardedLostLeaseWritesNothing(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(300*time.Millisecond))
	name := lockName(t)
	g, err := distlock.NewGuarded[string](c, name, nil, distlock.WithTTL(time.Second))
	require.NoError(t, err)
	require.NoError(t, g.Update(context.Background(), func(_ context.Context, v *string) error { *v = "before"; return nil }))
	err = g.Update(context.Background(), func(ctx context.Context, v *string) error {
		for _, p := range proxies {
			p.SetBlackhole(true)
		}
		<-ctx.Done() // ends when the lease is lost (bounded by the TTL)
		for _, p := range proxies {
			p.SetBlackhole(false)
		}
		*v = "after the loss"
		return nil
	})
	require.Error(t, err)
	assert.ErrorIs(t, err, distlock.ErrLeaseLost)
	assert.NotErrorIs(t, err, distlock.ErrMaybeApplied)
	for _, s := range servers {
		stored, err := s.Do("HGET", distlock.KeyOf("value", name), "data")
		require.NoError(t, err)
		if stored != nil { // the first write may be on a quorum only
			assert.Equal(t, `"before"`, string(stored.([]byte)), "nothing written on %s", s.Addr())
		}
	}
}

// TestGuardedHistory: several Clients increment one Guarded counter while
// they are cut off from the masters and masters are paused, at random.
// Every Update's result is recorded: the final value is at least the number
// of nil results and at most that plus the ErrMaybeApplied ones; any other
// error applied nothing.
func TestGuardedHistory(t *testing.T) {
	const clients, updates = 3, 40
	servers := distlocktest.NewServers(t, 3)
	name := lockName(t)
	var links [][]*distlocktest.Proxy
	var gs []*distlock.Guarded[int]
	for range clients {
		var addrs []string
		var ps []*distlocktest.Proxy
		for _, s := range servers {
			p := distlocktest.NewProxy(t, s.Addr())
			ps = append(ps, p)
			addrs = append(addrs, p.Addr())
		}
		c := newClient(t, addrs, distlock.WithMasterTimeout(200*time.Millisecond))
		g, err := distlock.NewGuarded[int](c, name, nil, distlock.WithTTL(time.Second))
		require.NoError(t, err)
		links = append(links, ps)
		gs = append(gs, g)
	}

	stop := make(chan struct{})
	faultsDone := make(chan struct{})
	go func() { // faults: partitions of one Client, pauses of one master
		defer close(faultsDone)
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(100+rng.IntN(200)) * time.Millisecond):
			}
			d := time.Duration(100+rng.IntN(1400)) * time.Millisecond
			if rng.IntN(2) == 0 {
				ps := links[rng.IntN(clients)]
				for _, p := range ps {
					p.SetBlackhole(true)
				}
				time.Sleep(d)
				for _, p := range ps {
					p.SetBlackhole(false)
				}
			} else {
				s := servers[rng.IntN(len(servers))]
				_ = s.Pause()
				time.Sleep(d / 4)
				_ = s.Resume()
			}
		}
	}()

	var applied, maybe, failed atomic.Int64
	inParallel(t, clients, func(i int) error {
		for range updates {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := gs[i].Update(ctx, func(_ context.Context, v *int) error {
				*v++
				time.Sleep(40 * time.Millisecond) // hold the lock a while: faults land mid-update
				return nil
			})
			cancel()
			switch {
			case err == nil:
				applied.Add(1)
			case errors.Is(err, distlock.ErrMaybeApplied):
				maybe.Add(1)
			default:
				failed.Add(1)
			}
		}
		return nil
	})
	close(stop)
	recv(t, faultsDone, "the fault injector stops")
	for _, ps := range links {
		for _, p := range ps {
			p.SetBlackhole(false)
		}
	}
	var final int
	require.Eventually(t, func() bool {
		v, _, err := gs[0].Load(context.Background())
		final = v
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)
	t.Logf("%d applied, %d may have been applied, %d not applied; final value %d", applied.Load(), maybe.Load(), failed.Load(), final)
	assert.GreaterOrEqual(t, int64(final), applied.Load(), "every nil result is in the value")
	assert.LessOrEqual(t, int64(final), applied.Load()+maybe.Load(), "no change counted twice, none from a failed Update")
	assert.Greater(t, applied.Load(), int64(0))
}

// TestGuardedSlowMasterKeepsFaultTolerance: a master that answers the
// fencing read late may hold a counter above the holder's token (it created
// it from TIME later); that master still takes the holder's writes, so with
// one master of three down the write lands on the other two.
func TestGuardedSlowMasterKeepsFaultTolerance(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(300*time.Millisecond))
	name := lockName(t)
	g, err := distlock.NewGuarded[int](c, name, nil, distlock.WithTTL(5*time.Second))
	require.NoError(t, err)
	proxies[2].SetLatency(30 * time.Millisecond) // a slower (remote) master
	require.NoError(t, g.Update(context.Background(), func(_ context.Context, v *int) error { *v++; return nil }))
	time.Sleep(200 * time.Millisecond)
	_ = servers

	// Second Update: M3 still slow while the token is taken; then M1 dies.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	start := time.Now()
	err = g.Update(ctx, func(_ context.Context, v *int) error {
		*v++
		proxies[0].SetBlackhole(true) // one master of three unreachable
		proxies[2].SetLatency(0)
		return nil
	})
	t.Logf("Update with 2 of 3 masters up: %v after %v", err, time.Since(start))
	assert.NoError(t, err, "2 of 3 masters up and the lease held, the write should land")
}

// TestTokensIndependentOfMasterClocks: a token seeded from a master whose
// clock was an hour ahead stays the floor of every later token, even after
// the master that carried it to a quorum lost its counter and the masters
// that answer first have only clock seeds: Token hears every master and
// takes a counter over any clock. (Before, the fast quorum of the two
// seeding masters sent the token an hour back.)
func TestTokensIndependentOfMasterClocks(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(testTimeout))
	ctx := context.Background()
	name := lockName(t)
	fence := "__distlock:fence:{" + name + "}"
	ahead := uint64(time.Now().Add(time.Hour).UnixMicro())
	// Master 0's counter as a clock an hour ahead seeded it.
	_, err := servers[0].Do("SET", fence, ahead)
	require.NoError(t, err)

	// A holds on masters 0 and 1 only; its token is written back there.
	proxies[2].SetBlackhole(true)
	m := newMutex(t, c, name)
	a, err := m.Lock(ctx)
	require.NoError(t, err)
	tokA, err := a.Token(ctx)
	require.NoError(t, err)
	require.Greater(t, tokA, ahead)
	require.NoError(t, a.Unlock(ctx))
	proxies[2].SetBlackhole(false)

	// Master 1 restarts and loses its counter; master 0 is slow. The two
	// fast masters have no counter: only seeds from clocks that are right.
	require.NoError(t, servers[1].Restart())
	proxies[0].SetLatency(200 * time.Millisecond)
	var b *distlock.Lease
	require.Eventually(t, func() bool { // until B holds on every master (master 1 may still be suspected)
		if b, err = m.TryLock(ctx); err != nil {
			return false
		}
		deadline := time.Now().Add(time.Second) // master 0's answer is 200ms late
		for holders(t, servers, name) < 3 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if holders(t, servers, name) == 3 {
			return true
		}
		require.NoError(t, b.Unlock(ctx))
		return false
	}, 10*time.Second, 20*time.Millisecond)
	tokB, err := b.Token(ctx)
	require.NoError(t, err)
	assert.Greater(t, tokB, tokA, "the later holder's token went back")
	require.NoError(t, b.Unlock(ctx))
}
