package distlock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// recovered runs f and returns what it panicked with, or nil.
func recovered(f func()) (p any) {
	defer func() { p = recover() }()
	f()
	return nil
}

// TestPanicReleases: a panic in Do's fn, Guarded.Update's fn or an
// Election's lead releases the lock (or leadership) and goes on with the
// same value: a caller that recovers leaves no lease for the watchdog to
// renew forever.
func TestPanicReleases(t *testing.T) {
	servers, c := cluster(t, 3)
	boom := &struct{ msg string }{"boom"}
	tests := map[string]func(name string){
		"Do": func(name string) {
			_ = c.Do(context.Background(), name, func(context.Context) error { panic(boom) })
		},
		"Guarded.Update": func(name string) {
			g, err := distlock.NewGuarded[int](c, name, nil)
			require.NoError(t, err)
			_ = g.Update(context.Background(), func(context.Context, *int) error { panic(boom) })
		},
		"Election.Run": func(name string) {
			e, err := distlock.NewElection[string](c, name, nil)
			require.NoError(t, err)
			_ = e.Run(context.Background(), "me", func(context.Context) error { panic(boom) })
		},
	}
	for what, run := range tests {
		t.Run(what, func(t *testing.T) {
			c2 := newClient(t, distlocktest.Addrs(servers))
			name := lockName(t)
			assert.Same(t, boom, recovered(func() { run(name) }), "the panic goes on with the same value")
			lease, err := newMutex(t, c2, name).TryLock(context.Background())
			require.NoError(t, err, "the lock was released by the panic")
			require.NoError(t, lease.Unlock(context.Background()))
			if what == "Election.Run" {
				e, err := distlock.NewElection[string](c2, name, nil)
				require.NoError(t, err)
				_, ok, err := e.Leader(context.Background())
				require.NoError(t, err)
				assert.False(t, ok, "no leader recorded")
			}
			eventuallyHolders(t, servers, name, 0, "no key left")
		})
	}
}

// TestCallbacksMayCallTheLibrary: a WithOnLost callback may call Close,
// Lock and Unlock: Close called from a callback returns, both when the
// lease was lost and when Close itself ended it.
func TestCallbacksMayCallTheLibrary(t *testing.T) {
	t.Run("lost, callback closes", func(t *testing.T) {
		servers := distlocktest.NewServers(t, 3)
		c, err := newUnfencedClient(distlocktest.Addrs(servers), distlock.WithMasterTimeout(testTimeout))
		require.NoError(t, err)
		closed := make(chan error, 1)
		m := newMutex(t, c, lockName(t), distlock.WithTTL(time.Second), distlock.WithOnLost(func(error) { closed <- c.Close() }))
		_, err = m.TryLock(context.Background())
		require.NoError(t, err)
		require.NoError(t, servers[0].Kill())
		require.NoError(t, servers[1].Kill())
		require.NoError(t, recv(t, closed, "Close from OnLost"))
	})
	t.Run("Close ends it, callback closes and locks", func(t *testing.T) {
		servers := distlocktest.NewServers(t, 3)
		c, err := newUnfencedClient(distlocktest.Addrs(servers))
		require.NoError(t, err)
		name := lockName(t)
		type result struct{ closeErr, lockErr error }
		got := make(chan result, 1)
		var m *distlock.Mutex
		m = newMutex(t, c, name, distlock.WithOnLost(func(error) {
			var r result
			r.closeErr = c.Close()
			_, r.lockErr = m.TryLock(context.Background())
			got <- r
		}))
		_, err = m.TryLock(context.Background())
		require.NoError(t, err)
		require.NoError(t, within(t, waitTimeout, c.Close))
		r := recv(t, got, "the callback")
		assert.NoError(t, r.closeErr)
		assert.ErrorIs(t, r.lockErr, distlock.ErrClosed)
	})
	t.Run("lost, callback unlocks and locks again", func(t *testing.T) {
		servers, c := cluster(t, 3, distlock.WithMasterTimeout(testTimeout))
		name := lockName(t)
		type result struct {
			unlockErr error
			lease     *distlock.Lease
			lockErr   error
		}
		got := make(chan result, 1)
		var lease *distlock.Lease
		leaseSet := make(chan struct{})
		var m *distlock.Mutex
		m = newMutex(t, c, name, distlock.WithTTL(time.Second), distlock.WithOnLost(func(error) {
			<-leaseSet
			var r result
			r.unlockErr = lease.Unlock(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r.lease, r.lockErr = m.Lock(ctx)
			got <- r
		}))
		var err error
		lease, err = m.TryLock(context.Background())
		close(leaseSet)
		require.NoError(t, err)
		_, err = servers[0].Do("SET", name, "someone else", "PX", 500)
		require.NoError(t, err)
		_, err = servers[1].Do("SET", name, "someone else", "PX", 500)
		require.NoError(t, err)
		r := recv(t, got, "the callback")
		assert.ErrorIs(t, r.unlockErr, distlock.ErrNotHeld)
		require.NoError(t, r.lockErr, "locked again once the other owner's keys expired")
		require.NoError(t, r.lease.Unlock(context.Background()))
	})
}

// TestPanicReleasesEveryKind: a panic in the fn of Slots.Do, RWMutex.Do and
// RDo, and MultiMutex.Do releases what it held, then goes on unchanged.
func TestPanicReleasesEveryKind(t *testing.T) {
	servers, c := cluster(t, 3)
	c2 := newClient(t, distlocktest.Addrs(servers))
	boom := &struct{ msg string }{"boom"}
	ctx := context.Background()
	tests := map[string]struct {
		run      func(c *distlock.Client, name string) error // returns the "is it free?" probe's error on c
		panicker func(name string)
	}{
		"Slots.Do": {
			panicker: func(name string) {
				s, err := distlock.NewSemaphore(c, name, 1)
				require.NoError(t, err)
				_ = s.Do(ctx, func(context.Context, int) error { panic(boom) })
			},
			run: func(c *distlock.Client, name string) error {
				s, err := distlock.NewSemaphore(c, name, 1)
				require.NoError(t, err)
				_, lease, err := s.TryAcquire(ctx)
				if err == nil {
					err = lease.Unlock(ctx)
				}
				return err
			},
		},
		"RWMutex.Do": {
			panicker: func(name string) { _ = newRW(t, c, name).Do(ctx, func(context.Context) error { panic(boom) }) },
			run:      func(c *distlock.Client, name string) error { return tryWrite(newRW(t, c, name)) },
		},
		"RWMutex.RDo": {
			panicker: func(name string) { _ = newRW(t, c, name).RDo(ctx, func(context.Context) error { panic(boom) }) },
			run:      func(c *distlock.Client, name string) error { return tryWrite(newRW(t, c, name)) },
		},
		"MultiMutex.Do": {
			panicker: func(name string) {
				mm, err := c.NewMultiMutex([]string{name, name + ":b"})
				require.NoError(t, err)
				_ = mm.Do(ctx, func(context.Context) error { panic(boom) })
			},
			run: func(c *distlock.Client, name string) error {
				mm, err := c.NewMultiMutex([]string{name, name + ":b"})
				require.NoError(t, err)
				ml, err := mm.TryLock(ctx)
				if err == nil {
					err = ml.Unlock(ctx)
				}
				return err
			},
		},
	}
	for what, tc := range tests {
		t.Run(what, func(t *testing.T) {
			name := lockName(t)
			assert.Same(t, boom, recovered(func() { tc.panicker(name) }), "the panic goes on with the same value")
			require.NoError(t, tc.run(c2, name), "released by the panic")
		})
	}
}

// tryWrite takes rw's write lock once, and releases it.
func tryWrite(rw *distlock.RWMutex) error {
	lease, err := rw.TryLock(context.Background())
	if err == nil {
		err = lease.Unlock(context.Background())
	}
	return err
}
