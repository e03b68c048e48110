package distlock_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// evlog records events in the order the observer was entered.
type evlog struct {
	mu     sync.Mutex
	events []distlock.Event
}

func (l *evlog) add(ev distlock.Event) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
}

func (l *evlog) all() []distlock.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]distlock.Event(nil), l.events...)
}

// awaitKinds waits (bounded) until the events of name end with want.
func (l *evlog) awaitKinds(t *testing.T, name string, want ...distlock.EventKind) []distlock.EventKind {
	t.Helper()
	var kinds []distlock.EventKind
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		kinds = l.of(name)
		if len(kinds) >= len(want) && slices.Equal(kinds[len(kinds)-len(want):], want) {
			return kinds
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Errorf("events of %q: %v, want them to end with %v", name, kinds, want)
	return kinds
}

func (l *evlog) of(name string) []distlock.EventKind {
	var ks []distlock.EventKind
	for _, ev := range l.all() {
		if ev.Name == name {
			ks = append(ks, ev.Kind)
		}
	}
	return ks
}

// Waiting undercounts: Lock calls queued behind this Client's first
// waiter never made a round, so they are not counted.
func TestStatsWaitingCountsQueuedWaiters(t *testing.T) {
	servers, c := cluster(t, 3)
	other := newClient(t, distlocktest.Addrs(servers))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	name := lockName(t)
	held, err := newMutex(t, other, name).Lock(ctx)
	require.NoError(t, err)
	defer held.Unlock(context.Background())
	const n = 4
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = newMutex(t, c, name).Lock(ctx) }()
		if i == 0 {
			require.Eventually(t, func() bool { return c.Stats().Waiting == 1 }, waitTimeout, 5*time.Millisecond)
		}
	}
	time.Sleep(time.Second)
	assert.Equal(t, n, c.Stats().Waiting, "four Lock calls are waiting")
	cancel()
	wg.Wait()
	assert.Zero(t, c.Stats().Waiting)
}

// An observer that calls back into the Client from every kind of event,
// including leases' own methods, must not deadlock.
func TestObserverCallsBack(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	var c *distlock.Client
	var mu sync.Mutex
	leases := map[string]*distlock.Lease{}
	seen := map[distlock.EventKind]int{}
	obs := func(ev distlock.Event) {
		if strings.HasPrefix(ev.Name, "cb-side") {
			return
		}
		mu.Lock()
		seen[ev.Kind]++
		l := leases[ev.Name]
		mu.Unlock()
		_ = c.Stats()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if ev.Name != "" {
			_, _ = c.Inspect(ctx, ev.Name)
		} else {
			_, _ = c.Inspect(ctx, "cb-master")
		}
		if m, err := c.NewMutex("cb-side-" + ev.Kind.String()); err == nil {
			if l2, err := m.TryLock(ctx); err == nil {
				_ = l2.Extend(ctx)
				_ = l2.Unlock(ctx)
			}
		}
		if l != nil {
			_ = l.Until()
			_, _ = l.Token(ctx)
			if ev.Kind == distlock.EventRenewal {
				_ = l.Extend(ctx)
			}
			if ev.Kind == distlock.EventLost {
				_ = l.Unlock(ctx)
			}
		}
	}
	var err error
	c, err = newUnfencedClient(addrs, distlock.WithObserver(obs), distlock.WithMasterTimeout(200*time.Millisecond))
	require.NoError(t, err)
	ctx := context.Background()
	lock := func(name string, opts ...distlock.Option) *distlock.Lease {
		l, err := newMutex(t, c, name, opts...).Lock(ctx)
		require.NoError(t, err)
		mu.Lock()
		leases[name] = l
		mu.Unlock()
		return l
	}
	a := lock("cb-a", distlock.WithTTL(900*time.Millisecond))
	b := lock("cb-b", distlock.WithTTL(time.Second), distlock.WithMaxHold(1500*time.Millisecond))
	_ = lock("cb-c", distlock.WithTTL(30*time.Second)) // lost at Close
	require.NoError(t, servers[2].Pause())
	time.Sleep(time.Second)
	require.NoError(t, servers[2].Resume())
	recv(t, b.Done(), "max hold")
	time.Sleep(500 * time.Millisecond)
	require.NoError(t, a.Unlock(ctx))
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	recv(t, done, "Close")
	mu.Lock()
	t.Logf("events seen: %v", seen)
	mu.Unlock()
	for _, k := range []distlock.EventKind{distlock.EventAcquire, distlock.EventRelease, distlock.EventRenewal, distlock.EventLost, distlock.EventMasterDown, distlock.EventMasterUp, distlock.EventExtend} {
		assert.Positive(t, seen[k], k.String())
	}
}

// Every loss path reports exactly one lost event, with the lock's name.
func TestObserverLostPaths(t *testing.T) {
	log := &evlog{}
	servers, c := cluster(t, 3, distlock.WithObserver(log.add), distlock.WithMasterTimeout(200*time.Millisecond))
	ctx := context.Background()
	maxHold := lockName(t)
	lm, err := newMutex(t, c, maxHold, distlock.WithTTL(time.Second), distlock.WithMaxHold(500*time.Millisecond)).Lock(ctx)
	require.NoError(t, err)
	refusedRenewal := lockName(t)
	lr, err := newMutex(t, c, refusedRenewal, distlock.WithTTL(time.Second)).Lock(ctx)
	require.NoError(t, err)
	refusedExtend := lockName(t)
	le, err := newMutex(t, c, refusedExtend, distlock.WithTTL(30*time.Second)).Lock(ctx)
	require.NoError(t, err)
	closed := lockName(t)
	lc, err := newMutex(t, c, closed, distlock.WithTTL(30*time.Second)).Lock(ctx)
	require.NoError(t, err)
	for _, s := range servers {
		_, err = s.Do("DEL", refusedRenewal, refusedExtend)
		require.NoError(t, err)
	}
	require.Error(t, le.Extend(ctx))
	recv(t, lm.Done(), "max hold")
	recv(t, lr.Done(), "refused renewal")
	// safety deadline: two masters paused.
	deadline := lockName(t)
	ld, err := newMutex(t, c, deadline, distlock.WithTTL(time.Second)).Lock(ctx)
	require.NoError(t, err)
	for _, s := range servers[1:] {
		require.NoError(t, s.Pause())
	}
	recv(t, ld.Done(), "deadline")
	for _, s := range servers[1:] {
		require.NoError(t, s.Resume())
	}
	require.NoError(t, c.Close())
	recv(t, lc.Done(), "close")
	for _, tc := range []struct {
		name string
		l    *distlock.Lease
	}{{maxHold, lm}, {refusedRenewal, lr}, {refusedExtend, le}, {deadline, ld}, {closed, lc}} {
		var lost []distlock.Event
		for _, ev := range log.all() {
			if ev.Kind == distlock.EventLost && ev.Name == tc.name {
				lost = append(lost, ev)
			}
		}
		if assert.Len(t, lost, 1, tc.name) {
			assert.Equal(t, tc.l.Err(), lost[0].Err)
			assert.Positive(t, lost[0].Duration)
			t.Logf("%s: %v (held %v)", tc.name[len(tc.name)-3:], lost[0].Err, lost[0].Duration)
		}
	}
	assert.Zero(t, c.Stats().Leases)
}

// Waiting returns to 0 after every outcome of Lock.
func TestStatsWaitingReturnsToZero(t *testing.T) {
	servers, c := cluster(t, 3)
	other := newClient(t, distlocktest.Addrs(servers))
	name := lockName(t)
	held, err := newMutex(t, other, name).Lock(context.Background())
	require.NoError(t, err)
	defer held.Unlock(context.Background())
	// ctx cancel
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = newMutex(t, c, name).Lock(ctx)
	cancel()
	require.Error(t, err)
	assert.Zero(t, c.Stats().Waiting, "after ctx end")
	// backoff.Stop
	_, err = newMutex(t, c, name, distlock.WithRetry(func() backoff.BackOff {
		return backoff.WithMaxRetries(backoff.NewConstantBackOff(10*time.Millisecond), 2)
	})).Lock(context.Background())
	require.Error(t, err)
	assert.Zero(t, c.Stats().Waiting, "after backoff.Stop")
	// Close during wait
	got := lockAsync(context.Background(), newMutex(t, c, name))
	require.Eventually(t, func() bool { return c.Stats().Waiting == 1 }, waitTimeout, 5*time.Millisecond)
	require.NoError(t, c.Close())
	require.ErrorIs(t, recv(t, got, "Lock"), distlock.ErrClosed)
	assert.Zero(t, c.Stats().Waiting, "after Close")
}

// Dissent and Agreed with a pending master.
func TestObserverDissentLeavesPendingOut(t *testing.T) {
	log := &evlog{}
	servers, c := cluster(t, 3, distlock.WithObserver(log.add), distlock.WithMasterTimeout(time.Second))
	name := lockName(t)
	require.NoError(t, servers[2].Pause())
	defer servers[2].Resume()
	l, err := newMutex(t, c, name).TryLock(context.Background())
	require.NoError(t, err)
	acquires := 0
	require.Eventually(t, func() bool { return len(log.of(name)) > 0 }, waitTimeout, 5*time.Millisecond)
	for _, ev := range log.all() {
		if ev.Name == name && ev.Kind == distlock.EventAcquire {
			acquires++
			t.Logf("%v agreed=%d masters=%d dissent=%v dur=%v", ev.Kind, ev.Agreed, ev.Masters, ev.Dissent, ev.Duration)
			assert.Equal(t, 2, ev.Agreed)
			assert.Empty(t, ev.Dissent, "the pending master is not listed")
		}
	}
	assert.Equal(t, 1, acquires)
	_ = l.Unlock(context.Background())
}

// RWMutex and MultiMutex names.
func TestObserverRWMutexAndMultiNames(t *testing.T) {
	log := &evlog{}
	_, c := cluster(t, 3, distlock.WithObserver(log.add))
	ctx := context.Background()
	name := lockName(t)
	rw, err := c.NewRWMutex(name)
	require.NoError(t, err)
	r, err := rw.RLock(ctx)
	require.NoError(t, err)
	require.NoError(t, r.Unlock(ctx))
	assert.Equal(t, []distlock.EventKind{distlock.EventAcquire, distlock.EventRelease}, log.awaitKinds(t, name, distlock.EventAcquire, distlock.EventRelease))
	n1, n2 := lockName(t), lockName(t)
	mm, err := c.NewMultiMutex([]string{n2, n1})
	require.NoError(t, err)
	ml, err := mm.Lock(ctx)
	require.NoError(t, err)
	require.NoError(t, ml.Unlock(ctx))
	require.NoError(t, c.Close()) // waits for the events to be delivered
	assert.Equal(t, []distlock.EventKind{distlock.EventAcquire, distlock.EventRelease}, log.of(n1))
	assert.Equal(t, []distlock.EventKind{distlock.EventAcquire, distlock.EventRelease}, log.of(n2))
}

// logger at Warn sees lost at Debug after Close.
func TestLoggerLossByCloseAtDebug(t *testing.T) {
	rec := &recorder{}
	_, c := cluster(t, 3, distlock.WithLogger(slog.New(slog.NewTextHandler(rec, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	_, err := newMutex(t, c, lockName(t)).Lock(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.Close())
	assert.False(t, strings.Contains(rec.logs(), "lease lost"), rec.logs())
}

// No renewal event of a lease comes after its lost event, even when the
// observer is slow and Extend finds the lease gone meanwhile.
func TestObserverNoRenewalAfterLost(t *testing.T) {
	log := &evlog{}
	var first sync.Once
	servers, c := cluster(t, 3, distlock.WithObserver(func(ev distlock.Event) {
		log.add(ev)
		if ev.Kind == distlock.EventRenewal {
			first.Do(func() { time.Sleep(300 * time.Millisecond) })
		}
	}))
	ctx := context.Background()
	a, b := lockName(t), lockName(t)
	opt := distlock.WithRenewalInterval(500 * time.Millisecond)
	la, err := newMutex(t, c, a, opt).Lock(ctx)
	require.NoError(t, err)
	lb, err := newMutex(t, c, b, opt).Lock(ctx)
	require.NoError(t, err)
	defer la.Unlock(ctx)
	// While the observer sleeps on the first renewal of the batch, the
	// other lease is found gone by Extend.
	var firstRenewed string
	require.Eventually(t, func() bool {
		for _, ev := range log.all() {
			if ev.Kind == distlock.EventRenewal {
				firstRenewed = ev.Name
				return true
			}
		}
		return false
	}, waitTimeout, time.Millisecond)
	victim, vl := b, lb
	if firstRenewed == b {
		victim, vl = a, la
	}
	for _, s := range servers {
		_, err := s.Do("DEL", victim)
		require.NoError(t, err)
	}
	require.Error(t, vl.Extend(ctx))
	time.Sleep(500 * time.Millisecond)
	kinds := log.of(victim)
	t.Logf("%s: %v", victim[len(victim)-2:], kinds)
	lost := false
	for _, k := range kinds {
		if k == distlock.EventLost {
			lost = true
		} else if lost && k == distlock.EventRenewal {
			t.Errorf("renewal event after lost: %v", kinds)
		}
	}
}

// Stats and Inspect hammered while locks come and go and a master is
// paused and killed (run with -race).
func TestStatsHammer(t *testing.T) {
	rec := &recorder{}
	servers, c := cluster(t, 3, append(rec.options(), distlock.WithMasterTimeout(200*time.Millisecond))...)
	rec.mu.Lock()
	rec.c = c
	rec.mu.Unlock()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := newMutex(t, c, "hammer-"+string(rune('a'+i%2)), distlock.WithTTL(time.Second))
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				if l, err := m.Lock(ctx); err == nil {
					_ = l.Extend(ctx)
					_ = l.Unlock(ctx)
				}
				cancel()
				_ = c.Stats()
				_, _ = c.Inspect(context.Background(), "hammer-a")
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, servers[1].Pause())
	time.Sleep(500 * time.Millisecond)
	require.NoError(t, servers[1].Resume())
	require.NoError(t, servers[2].Kill())
	time.Sleep(500 * time.Millisecond)
	require.NoError(t, servers[2].Restart())
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	require.Eventually(t, func() bool { s := c.Stats(); return s.Waiting == 0 && s.Leases == 0 && s.Up == 3 }, waitTimeout, 10*time.Millisecond)
	t.Logf("%+v", c.Stats())
}

// Inspect: hostile names, many masters with some paused and a ctx
// without deadline, Close during Inspect.
func TestInspectHostile(t *testing.T) {
	servers, c := cluster(t, 5, distlock.WithMasterTimeout(300*time.Millisecond))
	ctx := context.Background()
	for _, name := range []string{"a\nb", "{", "{t}a}b", "ünï cödé", "*", "a b\r\n$3\r\nDEL", strings.Repeat("k", 10000)} {
		l, err := newMutex(t, c, name).TryLock(ctx)
		require.NoError(t, err, "%q", name)
		st, err := c.Inspect(ctx, name)
		require.NoError(t, err, "%q", name)
		assert.True(t, st.Held, "%q", name)
		require.NoError(t, l.Unlock(ctx))
	}
	require.NoError(t, servers[3].Pause())
	require.NoError(t, servers[4].Pause())
	defer servers[3].Resume()
	defer servers[4].Resume()
	start := time.Now()
	st, err := c.Inspect(ctx, "x")
	require.NoError(t, err)
	t.Logf("Inspect with 2 of 5 paused took %v; errs %v %v", time.Since(start), st.Masters[3].Err, st.Masters[4].Err)
	assert.Less(t, time.Since(start), 2*time.Second)
	// Close while an Inspect waits for a paused master.
	got := make(chan error, 1)
	go func() {
		_, err := c.Inspect(ctx, "y")
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	go c.Close()
	t.Logf("Inspect during Close: %v", recv(t, got, "Inspect"))
}

// Inspect of a key of another type.
func TestInspectWrongType(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	for _, s := range servers {
		_, err := s.Do("HSET", name, "f", "v")
		require.NoError(t, err)
	}
	st, err := c.Inspect(context.Background(), name)
	require.NoError(t, err)
	for _, ms := range st.Masters {
		t.Logf("%+v", ms)
	}
	assert.Equal(t, 3, c.Stats().Up, "a WRONGTYPE answer does not take masters down")
}

// A renewal refused by a quorum is not retried: the log says the lease
// was lost, not that its renewal is failing.
func TestLoggerRefusedRenewalNotRetried(t *testing.T) {
	rec := &recorder{}
	servers, c := cluster(t, 3, rec.options()...)
	name := lockName(t)
	lease, err := newMutex(t, c, name, distlock.WithTTL(3*time.Second)).Lock(context.Background())
	require.NoError(t, err)
	for _, s := range servers {
		_, err := s.Do("SET", name, "someone-else", "PX", 30000)
		require.NoError(t, err)
	}
	recv(t, lease.Done(), "lost")
	require.Eventually(t, func() bool { return strings.Contains(rec.logs(), "lease lost") }, waitTimeout, 5*time.Millisecond)
	logs := rec.logs()
	t.Log(logs)
	assert.NotContains(t, logs, "retrying until the safety deadline", "the lease was lost at once, nothing is retried")
}

// One master with a wrong password fails every round that the others win:
// logged at Error (once a minute at most), and counted in Stats.
func TestLoggerPermanentOnOneMaster(t *testing.T) {
	rec := &recorder{}
	good := distlocktest.NewServers(t, 2)
	bad := distlocktest.NewServer(t, "--requirepass", "pw-only-here")
	addrs := append(distlocktest.Addrs(good), bad.Addr())
	c := newClient(t, addrs, distlock.WithLogger(slog.New(slog.NewTextHandler(rec, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	for range 5 {
		l, err := newMutex(t, c, lockName(t)).Lock(context.Background())
		require.NoError(t, err)
		require.NoError(t, l.Unlock(context.Background()))
	}
	require.Eventually(t, func() bool { return rec.logs() != "" }, waitTimeout, 5*time.Millisecond,
		"an operator is told that a master refuses every request (NOAUTH)")
	logs := rec.logs()
	assert.Contains(t, logs, `level=ERROR msg="distlock: master failing for a reason retrying cannot fix" master=`+bad.Addr())
	assert.Equal(t, 1, strings.Count(logs, "master failing"), "once a minute at most: %s", logs)
	ms := c.Stats().Masters[2]
	assert.Positive(t, ms.Failures)
	assert.Contains(t, ms.LastError, "NOAUTH")
}

// Events of one lease in order: the extend round that found the lease
// gone, then the loss.
func TestObserverExtendThenLost(t *testing.T) {
	log := &evlog{}
	servers, c := cluster(t, 3, distlock.WithObserver(log.add))
	name := lockName(t)
	lease, err := newMutex(t, c, name, distlock.WithTTL(30*time.Second)).Lock(context.Background())
	require.NoError(t, err)
	for _, s := range servers {
		_, err := s.Do("DEL", name)
		require.NoError(t, err)
	}
	require.ErrorIs(t, lease.Extend(context.Background()), distlock.ErrNotHeld)
	log.awaitKinds(t, name, distlock.EventAcquire, distlock.EventExtend, distlock.EventLost)
}

// A panicking observer: recovered and logged, on every kind of event; no
// lease is left behind, no panic reaches the caller, and Close completes.
func TestObserverPanicRecovered(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	rec := &recorder{}
	c, err := newUnfencedClient(addrs,
		distlock.WithObserver(func(ev distlock.Event) { panic("observer bug: " + ev.Kind.String()) }),
		distlock.WithLogger(slog.New(slog.NewTextHandler(rec, nil))))
	require.NoError(t, err)
	ctx := context.Background()
	name := lockName(t)
	ran := false
	require.NoError(t, c.Do(ctx, name, func(context.Context) error { ran = true; return nil }))
	assert.True(t, ran)
	// Renewals go on while every event panics.
	renewed := lockName(t)
	lease, err := newMutex(t, c, renewed, distlock.WithTTL(300*time.Millisecond)).Lock(ctx)
	require.NoError(t, err)
	time.Sleep(time.Second)
	require.NoError(t, lease.Err(), "renewed three times")
	held := lockName(t)
	_, err = newMutex(t, c, held, distlock.WithTTL(30*time.Second)).Lock(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Close()) // its lost events panic too
	assert.Zero(t, c.Stats().Up, "closed")
	assert.Zero(t, c.Stats().Leases)
	for _, n := range []string{name, renewed, held} {
		eventuallyHolders(t, servers, n, 0, n+" released")
	}
	logs := rec.logs()
	for _, kind := range []string{"acquire", "release", "renewal", "lost"} {
		assert.Contains(t, logs, `msg="distlock: observer panicked" event=`+kind)
	}
}

// A blocked observer delays no renewal and no loss: the lease stays held
// (nobody else gets the lock) while the observer blocks for three TTLs, and
// a lease lost meanwhile is lost on time.
func TestObserverBlockingDelaysNothing(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	other := newClient(t, addrs)
	unblock := make(chan struct{})
	var once sync.Once
	c := newClient(t, addrs, distlock.WithObserver(func(ev distlock.Event) {
		if ev.Kind == distlock.EventRenewal {
			once.Do(func() {
				select {
				case <-unblock:
				case <-time.After(waitTimeout):
				}
			})
		}
	}))
	ctx := context.Background()
	name := lockName(t)
	lease, err := newMutex(t, c, name, distlock.WithTTL(time.Second)).Lock(ctx)
	require.NoError(t, err)
	lost := lockName(t)
	doomed, err := newMutex(t, c, lost, distlock.WithTTL(time.Second)).Lock(ctx)
	require.NoError(t, err)
	for _, s := range servers {
		_, err := s.Do("SET", lost, "someone-else", "PX", 30000)
		require.NoError(t, err)
	}
	recv(t, doomed.Done(), "the stolen lease lost at its next renewal")
	for range 3 {
		time.Sleep(time.Second)
		_, err := newMutex(t, other, name).TryLock(ctx)
		require.ErrorIs(t, err, distlock.ErrLocked, "the blocked observer stopped renewals")
	}
	require.NoError(t, lease.Err())
	close(unblock)
	require.NoError(t, lease.Unlock(ctx))
	assert.Zero(t, c.Stats().EventsDropped)
}

// The observer may call Close, from any event: here from a loss.
func TestObserverMayClose(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	var c *distlock.Client
	closed := make(chan struct{})
	var once sync.Once
	c, err := newUnfencedClient(distlocktest.Addrs(servers), distlock.WithObserver(func(ev distlock.Event) {
		if ev.Kind == distlock.EventLost {
			once.Do(func() {
				_ = c.Close() // Close returns nil
				close(closed)
			})
		}
	}))
	require.NoError(t, err)
	name := lockName(t)
	other := lockName(t)
	_, err = newMutex(t, c, name, distlock.WithTTL(time.Second), distlock.WithMaxHold(300*time.Millisecond)).Lock(context.Background())
	require.NoError(t, err)
	_, err = newMutex(t, c, other, distlock.WithTTL(30*time.Second)).Lock(context.Background())
	require.NoError(t, err)
	recv(t, closed, "Close called from the observer")
	assert.Zero(t, c.Stats().Up)
	eventuallyHolders(t, servers, other, 0, "Close released the other lease")
}

// Slots: a slot's round events carry "name[i]", its wait and retry events
// the Slots' name.
func TestObserverSlotNames(t *testing.T) {
	log := &evlog{}
	servers, c := cluster(t, 3, distlock.WithObserver(log.add))
	other := newClient(t, distlocktest.Addrs(servers))
	name := lockName(t)
	so, err := distlock.NewSemaphore(other, name, 1)
	require.NoError(t, err)
	_, held, err := so.Acquire(context.Background())
	require.NoError(t, err)
	s, err := distlock.NewSemaphore(c, name, 1)
	require.NoError(t, err)
	got := make(chan error, 1)
	go func() {
		_, l, err := s.Acquire(context.Background())
		if err == nil {
			err = l.Unlock(context.Background())
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return slices.Contains(log.of(name), distlock.EventWait) }, waitTimeout, 5*time.Millisecond)
	require.NoError(t, held.Unlock(context.Background()))
	require.NoError(t, recv(t, got, "Acquire"))
	require.NoError(t, c.Close())
	slot := name + "[0]"
	kinds := log.of(slot)
	assert.Contains(t, kinds, distlock.EventAcquire)
	assert.Equal(t, distlock.EventRelease, kinds[len(kinds)-1])
}

// Events beyond the queue's bound, while the observer blocks, are dropped
// and counted; the rest are delivered in order once it returns.
func TestObserverDropsBeyondQueue(t *testing.T) {
	defer distlock.SetMaxQueuedEvents(4)()
	unblock := make(chan struct{})
	var mu sync.Mutex
	var kinds []distlock.EventKind
	_, c := cluster(t, 3, distlock.WithObserver(func(ev distlock.Event) {
		<-unblock
		mu.Lock()
		kinds = append(kinds, ev.Kind)
		mu.Unlock()
	}))
	m := newMutex(t, c, lockName(t))
	for range 5 { // 10 events: one in the observer, 4 queued, 5 dropped
		l, err := m.TryLock(context.Background())
		require.NoError(t, err)
		require.NoError(t, l.Unlock(context.Background()))
	}
	require.Eventually(t, func() bool { return c.Stats().EventsDropped >= 5 }, waitTimeout, 5*time.Millisecond)
	close(unblock)
	require.NoError(t, c.Close())
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, uint64(10), uint64(len(kinds))+c.Stats().EventsDropped, "every event delivered or counted")
	for i, k := range kinds {
		want := distlock.EventAcquire
		if i%2 == 1 {
			want = distlock.EventRelease
		}
		assert.Equal(t, want, k, "event %d in order", i)
	}
}
