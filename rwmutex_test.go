package distlock_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// readersEverywhere waits until every master has name's reader set (an
// RLock returns at a quorum; a writer that reaches a master before the
// reader's entry takes it there and sets no bar).
func readersEverywhere(t testing.TB, servers []*distlocktest.Server, name string) {
	t.Helper()
	eventuallyHolders(t, servers, distlock.KeyOf("readers", name), len(servers), "the reader on every master")
}

func newRW(t testing.TB, c *distlock.Client, name string, opts ...distlock.Option) *distlock.RWMutex {
	t.Helper()
	rw, err := c.NewRWMutex(name, opts...)
	require.NoError(t, err)
	return rw
}

// TestRWMutexExclusion: readers and writers on three Clients, while a
// minority of the masters fails: readers overlap each other, a writer
// never overlaps anyone, and writers get their turns among the readers.
func TestRWMutexExclusion(t *testing.T) {
	for _, f := range minorityFaults {
		t.Run(f.name, func(t *testing.T) {
			servers := distlocktest.NewServers(t, f.masters)
			name := lockName(t)
			occ := newOccupancy(0)
			var reads, writes atomic.Int64
			const clients, readers, writers = 3, 3, 1
			underFault(t, f, servers, clients, readers+writers, func(c *distlock.Client) (*distlock.RWMutex, error) {
				return c.NewRWMutex(name, distlock.WithTTL(5*time.Second))
			}, func(rw *distlock.RWMutex, w int) error {
				shared := w < readers
				lock, count := rw.Lock, &writes
				if shared {
					lock, count = rw.RLock, &reads
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				lease, err := lock(ctx)
				if err != nil {
					return err
				}
				occ.enter(name, shared)
				time.Sleep(2 * time.Millisecond)
				occ.exit(name, shared)
				count.Add(1)
				return lease.Unlock(context.Background())
			})
			occ.check(t)
			assert.Greater(t, occ.maxReaders, 1, "readers never overlapped")
			// Every worker gets many turns in 2s (a reader and a writer of
			// one Client once waited for each other until a bar expired:
			// each worker made one cycle in the whole run).
			assert.Greater(t, reads.Load(), int64(2*clients*readers), "reads")
			assert.Greater(t, writes.Load(), int64(2*clients*writers), "writes")
			// Readers get turns between writers (when a writer kept out by
			// another writer barred readers too, they got 6% of the turns).
			assert.Greater(t, reads.Load(), writes.Load()/4, "readers starved by writers")
			t.Logf("%d reads (up to %d at once), %d writes", reads.Load(), occ.maxReaders, writes.Load())
		})
	}
}

// TestRWMutexWriterNotStarved: readers on one Client hold the lock in
// overlapping turns, so that some reader always holds it; a writer on
// another Client still gets in, soon: once it waits, new readers wait.
func TestRWMutexWriterNotStarved(t *testing.T) {
	servers, readersClient := cluster(t, 3)
	writerClient := newClient(t, distlocktest.Addrs(servers))
	name := lockName(t)
	rrw := newRW(t, readersClient, name)
	wrw := newRW(t, writerClient, name)

	stop := make(chan struct{})
	var readerInside atomic.Int32
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(r) * 10 * time.Millisecond) // staggered
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				lease, err := rrw.RLock(ctx)
				cancel()
				if err != nil {
					errs[r] = err
					return
				}
				readerInside.Add(1)
				time.Sleep(40 * time.Millisecond)
				readerInside.Add(-1)
				if err := lease.Unlock(context.Background()); err != nil {
					errs[r] = err
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // the readers are streaming
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := wrw.Lock(ctx)
	waited := time.Since(start)
	require.NoError(t, err, "the writer starved")
	assert.Zero(t, readerInside.Load(), "a reader inside with the writer")
	time.Sleep(50 * time.Millisecond)
	assert.Zero(t, readerInside.Load(), "a reader got in while the writer held")
	require.NoError(t, lease.Unlock(ctx))
	close(stop)
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	// The readers hold for 40ms each: the writer waits for those inside,
	// and a few handoffs.
	assert.Less(t, waited, 2*time.Second)
	t.Logf("writer waited %v behind streaming readers", waited)
}

// TestRWMutexWriterGivesUp: a writer whose Lock ends while readers hold
// lifts its bar, so new readers get in at once; TryLock sets no bar.
func TestRWMutexWriterGivesUp(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	rw := newRW(t, c, name, distlock.WithTTL(30*time.Second))
	reader, err := rw.RLock(context.Background())
	require.NoError(t, err)

	_, err = rw.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrLocked)
	bar := distlock.KeyOf("writer-waits", name)
	assert.Zero(t, holders(t, servers, bar), "TryLock set a bar")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = rw.Lock(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, distlock.ErrLocked)
	eventuallyHolders(t, servers, bar, 0, "the bar is lifted when the writer gives up")

	second, err := rw.TryRLock(context.Background())
	require.NoError(t, err, "a new reader gets in after the writer gave up")
	require.NoError(t, second.Unlock(context.Background()))
	require.NoError(t, reader.Unlock(context.Background()))
	require.NoError(t, c.Close())
	for _, s := range servers {
		assert.Zero(t, dbsize(t, s), "keys left")
	}
}

// TestRWMutexBarKeepsReadersOut: while a writer waits (on another Client),
// a new reader is refused, and gets in after the writer's turn.
func TestRWMutexBarKeepsReadersOut(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	rw := newRW(t, c, name)
	other := newRW(t, newClient(t, distlocktest.Addrs(servers)), name)
	reader, err := rw.RLock(context.Background())
	require.NoError(t, err)
	readersEverywhere(t, servers, name)

	wrote := make(chan error, 1)
	go func() {
		lease, err := other.Lock(context.Background())
		if err == nil {
			time.Sleep(100 * time.Millisecond)
			err = lease.Unlock(context.Background())
		}
		wrote <- err
	}()
	bar := distlock.KeyOf("writer-waits", name)
	eventuallyHolders(t, servers, bar, 3, "the waiting writer's bar")
	_, err = rw.TryRLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrLocked, "a new reader while a writer waits")

	readAgain := make(chan error, 1)
	go func() {
		lease, err := rw.RLock(context.Background())
		if err == nil {
			err = lease.Unlock(context.Background())
		}
		readAgain <- err
	}()
	silent(t, readAgain, 100*time.Millisecond, "RLock while a writer waits")
	require.NoError(t, reader.Unlock(context.Background()))
	require.NoError(t, recv(t, wrote, "the writer's turn"))
	require.NoError(t, recv(t, readAgain, "the reader after the writer"))
	assert.Eventually(t, func() bool { return holders(t, servers, bar) == 0 }, 5*time.Second, 5*time.Millisecond,
		"the writer's bar is gone on every master once it got in")
}

// TestRWMutexDeadReaderFreesWriter: a reader whose process dies keeps the
// writer out until its lease expires, within a TTL, and no longer.
func TestRWMutexDeadReaderFreesWriter(t *testing.T) {
	servers, proxies, dead := proxied(t, 3, distlock.WithMasterTimeout(200*time.Millisecond))
	name := lockName(t)
	const ttl = time.Second
	_, err := newRW(t, dead, name, distlock.WithTTL(ttl)).RLock(context.Background())
	require.NoError(t, err)
	killed := time.Now()
	for _, p := range proxies {
		p.SetBlackhole(true)
	}
	rw := newRW(t, newClient(t, distlocktest.Addrs(servers)), name, distlock.WithTTL(ttl))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := rw.Lock(ctx)
	require.NoError(t, err)
	waited := time.Since(killed)
	assert.Less(t, waited, ttl+500*time.Millisecond, "free within a TTL")
	assert.Greater(t, waited, ttl/2, "the dead reader held until its lease expired")
	require.NoError(t, lease.Unlock(ctx))
}

// TestRWMutexLeasesRenewedAndHealed: a read lease outlives its TTL while
// the watchdog renews it, is set again on a master that restarted empty,
// and has no fencing token; a write lease has one.
func TestRWMutexLeasesRenewedAndHealed(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	const ttl = 600 * time.Millisecond
	rw := newRW(t, c, name, distlock.WithTTL(ttl))
	reader, err := rw.RLock(context.Background())
	require.NoError(t, err)
	_, err = reader.Token(context.Background())
	require.ErrorIs(t, err, errors.ErrUnsupported)

	readers := distlock.KeyOf("readers", name)
	require.NoError(t, servers[0].Restart())
	require.Eventually(t, func() bool { return holders(t, servers, readers) == 3 }, 5*time.Second, 10*time.Millisecond,
		"the reader's entry is set again on the restarted master")
	time.Sleep(3 * ttl)
	require.NoError(t, reader.Err())
	_, err = rw.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrLocked, "the renewed reader still holds")
	require.NoError(t, reader.Extend(context.Background()))
	require.NoError(t, reader.Unlock(context.Background()))
	require.ErrorIs(t, reader.Unlock(context.Background()), distlock.ErrNotHeld)

	writer, err := rw.TryLock(context.Background())
	require.NoError(t, err)
	_, err = writer.Token(context.Background())
	require.NoError(t, err)
	_, err = rw.TryRLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrLocked, "a reader while the writer holds")
	require.NoError(t, writer.Unlock(context.Background()))
	require.NoError(t, rw.RDo(context.Background(), func(context.Context) error { return nil }))
	require.NoError(t, rw.Do(context.Background(), func(context.Context) error { return nil }))
	assert.Equal(t, name, rw.Name())
}

// TestRWMutexReadLeaseLost: a read lease whose entry is gone from a quorum
// (flushed) is lost at its next renewal, before a writer could get in.
func TestRWMutexReadLeaseLost(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	rw := newRW(t, c, name, distlock.WithTTL(600*time.Millisecond))
	reader, err := rw.RLock(context.Background())
	require.NoError(t, err)
	for _, s := range servers {
		_, err := s.Do("DEL", distlock.KeyOf("readers", name))
		require.NoError(t, err)
	}
	recv(t, reader.Done(), "the read lease's loss")
	require.ErrorIs(t, reader.Err(), distlock.ErrLeaseLost)
}

// TestRWMutexReadersNotStarvedByWriters: two writers on two Clients take
// turns, each holding the lock 100ms; a reader on a third Client still
// gets in between them.
func TestRWMutexReadersNotStarvedByWriters(t *testing.T) {
	servers, c1 := cluster(t, 3)
	c2, c3 := newClient(t, distlocktest.Addrs(servers)), newClient(t, distlocktest.Addrs(servers))
	name := lockName(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, c := range []*distlock.Client{c1, c2} {
		rw := newRW(t, c, name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				l, err := rw.Lock(context.Background())
				if err != nil {
					errs[i] = err
					return
				}
				time.Sleep(100 * time.Millisecond)
				if err := l.Unlock(context.Background()); err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // the writers take turns
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := newRW(t, c3, name).RLock(ctx)
	if err == nil {
		err = l.Unlock(ctx) // before the writers stop: they need their turn to see stop
	}
	close(stop)
	wg.Wait()
	require.NoError(t, err, "the reader starved behind two writers")
	require.NoError(t, errors.Join(errs...))
}

// TestRWMutexGiveUpWakesReaders: a writer that gives up lifts its bar and
// wakes the readers it kept out, those of its own Client too (whose
// announcement the Client skips), without waiting for their backoff.
func TestRWMutexGiveUpWakesReaders(t *testing.T) {
	servers, holder := cluster(t, 3)
	c := newClient(t, distlocktest.Addrs(servers))
	name := lockName(t)
	r0, err := newRW(t, holder, name).RLock(context.Background())
	require.NoError(t, err)
	readersEverywhere(t, servers, name)
	rw := newRW(t, c, name, distlock.WithRetry(slowRetry)) // a 5s backoff
	wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	gaveUp := make(chan time.Time, 1)
	go func() { _, _ = rw.Lock(wctx); gaveUp <- time.Now() }()
	eventuallyHolders(t, servers, distlock.KeyOf("writer-waits", name), 3, "the waiting writer's bar")
	read := make(chan time.Time, 1)
	go func() {
		l, err := rw.RLock(context.Background())
		if err == nil {
			_ = l.Unlock(context.Background())
		}
		read <- time.Now()
	}()
	at := recv(t, gaveUp, "the writer gives up")
	got := recv(t, read, "the reader")
	assert.Less(t, got.Sub(at), time.Second, "the reader waited for its backoff")
	require.NoError(t, r0.Unlock(context.Background()))
}

// TestRWMutexGiveUpKeepsDeadline: a writer whose Lock ends while a master
// does not answer returns about when its context ends, not a master
// timeout later (the withdrawal does not wait for the silent master).
func TestRWMutexGiveUpKeepsDeadline(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(2*time.Second))
	name := lockName(t)
	r, err := newRW(t, newClient(t, distlocktest.Addrs(servers)), name).RLock(context.Background())
	require.NoError(t, err)
	proxies[2].SetBlackhole(true)
	defer proxies[2].SetBlackhole(false)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = newRW(t, c, name).Lock(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 1500*time.Millisecond, "Lock overran its deadline")
	require.NoError(t, r.Unlock(context.Background()))
}

// TestQueuedReadersShareAtOnce: readers queued in one Client behind a
// writer all get the lock right after the writer's release: a reader that
// reaches the head behind a reader that got its lease does not wait for a
// release (read leases do not exclude each other).
func TestQueuedReadersShareAtOnce(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	writerC, readerC := newClient(t, addrs), newClient(t, addrs)
	name := lockName(t)
	wrw, err := writerC.NewRWMutex(name)
	require.NoError(t, err)
	wl, err := wrw.TryLock(context.Background())
	require.NoError(t, err)

	rrw, err := readerC.NewRWMutex(name, distlock.WithRetry(slowRetry))
	require.NoError(t, err)
	const readers = 8
	got := make(chan time.Time, readers)
	errs := make(chan error, readers)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range readers {
		go func() {
			l, err := rrw.RLock(ctx)
			if err != nil {
				errs <- err
				return
			}
			got <- time.Now()
			<-ctx.Done()
			_ = l.Unlock(context.Background())
		}()
	}
	waitSubscribed(t, servers, name)
	time.Sleep(300 * time.Millisecond) // every reader queued
	released := time.Now()
	require.NoError(t, wl.Unlock(context.Background()))
	// Had each reader waited for the one before it, the 7th would get in
	// 60ms or more after the release. (One reader may miss the release's
	// announcement on a loaded machine and wait for its backoff: the 8th
	// is not timed.)
	var seventh time.Time
	for i := range readers - 1 {
		select {
		case at := <-got:
			seventh = at
		case err := <-errs:
			t.Fatalf("RLock: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d readers got the lock", i)
		}
	}
	t.Logf("%d of %d readers held the lock %v after the writer's release", readers-1, readers, seventh.Sub(released))
	assert.Less(t, seventh.Sub(released), 40*time.Millisecond, "readers share the lock: none should wait for another's release")
	cancel()
}
