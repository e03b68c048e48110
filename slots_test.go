package distlock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// occupancy records who is inside the critical sections of a test: per key,
// how many readers and writers are inside at once, and every breach of the
// bounds (at most one writer, never with readers; at most limit holders in
// all). Goroutines call enter and exit; the test reads the report at the end.
type occupancy struct {
	limit int // holders in all at once; 0: no bound

	mu               sync.Mutex
	readers, writers map[string]int
	total, maxTotal  int
	maxReaders       int
	used             map[string]int // entries per key
	breaches         []string
}

func newOccupancy(limit int) *occupancy {
	return &occupancy{limit: limit, readers: map[string]int{}, writers: map[string]int{}, used: map[string]int{}}
}

// enter records a holder of key (a writer, or a reader if shared).
func (o *occupancy) enter(key string, shared bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if shared {
		o.readers[key]++
		o.maxReaders = max(o.maxReaders, o.readers[key])
	} else {
		o.writers[key]++
	}
	o.used[key]++
	o.total++
	o.maxTotal = max(o.maxTotal, o.total)
	switch {
	case o.writers[key] > 1:
		o.breaches = append(o.breaches, fmt.Sprintf("%s: %d writers at once", key, o.writers[key]))
	case o.writers[key] == 1 && o.readers[key] > 0:
		o.breaches = append(o.breaches, fmt.Sprintf("%s: a writer with %d readers", key, o.readers[key]))
	case o.limit > 0 && o.total > o.limit:
		o.breaches = append(o.breaches, fmt.Sprintf("%d holders at once, limit %d", o.total, o.limit))
	}
}

func (o *occupancy) exit(key string, shared bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if shared {
		o.readers[key]--
	} else {
		o.writers[key]--
	}
	o.total--
}

// check fails t with every breach recorded.
func (o *occupancy) check(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	assert.Empty(t, o.breaches)
}

// faults runs fault on servers while the test's workers run: a paused
// master (resumed at the end) or killed ones.
type fault struct {
	name    string
	masters int
	apply   func(servers []*distlocktest.Server) error
	undo    func(servers []*distlocktest.Server) error
}

var minorityFaults = []fault{
	{name: "3 masters, one paused", masters: 3,
		apply: func(s []*distlocktest.Server) error { return s[0].Pause() },
		undo:  func(s []*distlocktest.Server) error { return s[0].Resume() }},
	{name: "5 masters, two killed", masters: 5,
		apply: func(s []*distlocktest.Server) error { return errors.Join(s[3].Kill(), s[4].Kill()) },
		undo:  func([]*distlocktest.Server) error { return nil }},
}

// underFault runs workers goroutines on each of clients Clients over
// servers, for 2s, with f applied half a second in and undone at the end.
// setup makes a Client's lock; each goroutine runs cycle(lock, w) (lock,
// hold, unlock, with w its number in the Client) until the 2s are over or
// a cycle fails. It fails t with every error.
func underFault[L any](t *testing.T, f fault, servers []*distlocktest.Server, clients, workers int,
	setup func(c *distlock.Client) (L, error), cycle func(lock L, w int) error) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	faulted := make(chan error, 1)
	go func() {
		time.Sleep(500 * time.Millisecond)
		faulted <- f.apply(servers)
	}()
	inParallel(t, clients, func(int) error {
		c, err := newUnfencedClient(distlocktest.Addrs(servers), distlock.WithMasterTimeout(testTimeout))
		if err != nil {
			return err
		}
		defer c.Close()
		lock, err := setup(c)
		if err != nil {
			return err
		}
		var wg sync.WaitGroup
		errs := make([]error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for errs[w] == nil && time.Now().Before(deadline) {
					errs[w] = cycle(lock, w)
				}
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	})
	require.NoError(t, <-faulted)
	require.NoError(t, f.undo(servers))
}

// TestSlotsNeverOverAdmit: 3n workers on three Clients contend for n slots
// while a minority of the masters fails: never more than n holders at
// once, never two on one slot, and every slot is used.
func TestSlotsNeverOverAdmit(t *testing.T) {
	for _, f := range minorityFaults {
		t.Run(f.name, func(t *testing.T) {
			servers := distlocktest.NewServers(t, f.masters)
			const n = 3
			values := []string{"key-a", "key-b", "key-c"}
			name := lockName(t)
			occ := newOccupancy(n)
			var cycles atomic.Int64
			underFault(t, f, servers, 3, 3, func(c *distlock.Client) (*distlock.Slots[string], error) {
				return distlock.NewSlots(c, name, values, distlock.WithTTL(5*time.Second))
			}, func(s *distlock.Slots[string], _ int) error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				v, lease, err := s.Acquire(ctx)
				if err != nil {
					return err
				}
				occ.enter(v, false)
				time.Sleep(time.Millisecond)
				occ.exit(v, false)
				cycles.Add(1)
				return lease.Unlock(context.Background())
			})
			occ.check(t)
			assert.LessOrEqual(t, occ.maxTotal, n)
			for _, v := range values {
				assert.Positive(t, occ.used[v], "slot %s never used", v)
			}
			t.Logf("%d cycles, at most %d holders at once", cycles.Load(), occ.maxTotal)
		})
	}
}

// TestSlotsOverAdmissionImpossible: 3 masters, 2 permits, and three holders
// that each see a different majority ({1,2}, {2,3}, {1,3}): counting
// holders per master would admit all three. Each slot is a lock of its own,
// so the third finds each slot held on one of its two masters and fails.
func TestSlotsOverAdmissionImpossible(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	proxies := make([]*distlocktest.Proxy, 3)
	for i, s := range servers {
		proxies[i] = distlocktest.NewProxy(t, s.Addr())
	}
	name := lockName(t)
	// tryWithout makes one TryAcquire from a new Client that cannot reach
	// master cut.
	tryWithout := func(cut int) (int, *distlock.Lease, error) {
		for i, p := range proxies {
			p.SetBlackhole(i == cut)
		}
		c, err := newUnfencedClient([]string{proxies[0].Addr(), proxies[1].Addr(), proxies[2].Addr()}, distlock.WithMasterTimeout(200*time.Millisecond))
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		sem, err := distlock.NewSemaphore(c, name, 2, distlock.WithTTL(30*time.Second))
		require.NoError(t, err)
		return sem.TryAcquire(context.Background())
	}
	first, _, err := tryWithout(2) // masters 0 and 1
	require.NoError(t, err)
	second, _, err := tryWithout(0) // masters 1 and 2
	require.NoError(t, err)
	assert.NotEqual(t, first, second)
	_, _, err = tryWithout(1) // masters 0 and 2
	require.ErrorIs(t, err, distlock.ErrNotAcquired)
	require.ErrorIs(t, err, distlock.ErrLocked)
	// Each permit is held on its holder's majority. (A holder's acquire to
	// the master it could not reach may still land there later, when that
	// Client's connection had not sent it before the blackhole ended.)
	for permit, on := range map[int][]int{first: {0, 1}, second: {1, 2}} {
		key := distlock.KeyOf("slot", name) + fmt.Sprintf(":%d", permit)
		for _, i := range on {
			n, err := servers[i].Do("EXISTS", key)
			require.NoError(t, err)
			assert.Equal(t, int64(1), n, "permit %d on master %d", permit, i)
		}
	}
	for _, p := range proxies {
		p.SetBlackhole(false)
	}
}

// TestSlotsKilledHolderFreed: a holder whose process dies (its masters stop
// hearing from it) holds its slots until their TTL runs out, and no longer:
// a waiter gets one within a TTL.
func TestSlotsKilledHolderFreed(t *testing.T) {
	servers, proxies, dead := proxied(t, 3, distlock.WithMasterTimeout(200*time.Millisecond))
	name := lockName(t)
	const ttl = time.Second
	values := []string{"gpu0", "gpu1"}
	s, err := distlock.NewSlots(dead, name, values, distlock.WithTTL(ttl))
	require.NoError(t, err)
	for range values {
		_, _, err := s.TryAcquire(context.Background())
		require.NoError(t, err)
	}
	_, _, err = s.TryAcquire(context.Background())
	require.ErrorIs(t, err, distlock.ErrLocked, "both slots are held")
	killed := time.Now()
	for _, p := range proxies {
		p.SetBlackhole(true) // the holder is gone: no renewal, no release
	}

	live := newClient(t, distlocktest.Addrs(servers))
	s2, err := distlock.NewSlots(live, name, values, distlock.WithTTL(ttl))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, lease, err := s2.Acquire(ctx)
	require.NoError(t, err)
	waited := time.Since(killed)
	assert.Contains(t, values, v)
	assert.Less(t, waited, ttl+500*time.Millisecond, "free within a TTL")
	assert.Greater(t, waited, ttl/2, "the dead holder's slots stayed held until they expired")
	require.NoError(t, lease.Unlock(ctx))
}

// TestSlotsLeases: each value's lease names its slot, has a fencing token,
// and is what Do passes; invalid input is refused with a clear error.
func TestSlotsLeases(t *testing.T) {
	_, c := cluster(t, 3)
	name := lockName(t)
	values := []string{"only"}
	s, err := distlock.NewSlots(c, name, values)
	require.NoError(t, err)
	assert.Equal(t, name, s.Name())
	assert.Equal(t, 1, s.Len())
	v, lease, err := s.TryAcquire(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "only", v)
	assert.Equal(t, name+"[0]", lease.Name())
	tok1, err := lease.Token(context.Background())
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(context.Background()))

	var got string
	require.NoError(t, s.Do(context.Background(), func(ctx context.Context, v string) error {
		got = v
		_, _, err := s.TryAcquire(ctx)
		if !errors.Is(err, distlock.ErrLocked) {
			return fmt.Errorf("second holder: %v", err)
		}
		return nil
	}))
	assert.Equal(t, "only", got)
	_, lease, err = s.TryAcquire(context.Background())
	require.NoError(t, err)
	tok2, err := lease.Token(context.Background())
	require.NoError(t, err)
	assert.Greater(t, tok2, tok1)
	require.NoError(t, lease.Unlock(context.Background()))

	for _, bad := range []struct {
		values []string
		want   string
	}{
		{nil, "need 1 to 4096 values, got 0"},
		{make([]string, distlock.MaxSlots+1), "got 4097"},
	} {
		_, err := distlock.NewSlots(c, name, bad.values)
		assert.ErrorContains(t, err, bad.want)
	}
	_, err = distlock.NewSemaphore(c, name, 0)
	assert.ErrorContains(t, err, "need 1 to 4096 permits, got 0")
	_, err = distlock.NewSlots(c, "__distlock:x", values)
	assert.ErrorContains(t, err, "reserved")
	_, err = distlock.NewSlots(c, name, values, distlock.WithTTL(0))
	assert.ErrorContains(t, err, "WithTTL")
}

// TestSlotsWaitForRelease: a waiter is woken by the release of any slot.
func TestSlotsWaitForRelease(t *testing.T) {
	_, c := cluster(t, 3)
	name := lockName(t)
	sem, err := distlock.NewSemaphore(c, name, 2, distlock.WithRetry(slowRetry))
	require.NoError(t, err)
	_, a, err := sem.TryAcquire(context.Background())
	require.NoError(t, err)
	_, b, err := sem.TryAcquire(context.Background())
	require.NoError(t, err)

	got := make(chan error, 1)
	go func() {
		_, lease, err := sem.Acquire(context.Background())
		if err == nil {
			err = lease.Unlock(context.Background())
		}
		got <- err
	}()
	silent(t, got, 200*time.Millisecond, "Acquire while both permits are held")
	released := time.Now()
	require.NoError(t, b.Unlock(context.Background()))
	require.NoError(t, recv(t, got, "Acquire after a release"))
	// The retry policy waits 5s: the release notice woke it.
	assert.Less(t, time.Since(released), 2*time.Second)
	require.NoError(t, a.Unlock(context.Background()))
}
