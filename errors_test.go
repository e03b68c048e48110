package distlock_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// within runs f in a goroutine and returns its error, failing t if it has
// not returned after d.
func within(t *testing.T, d time.Duration, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("still running after %v", d)
		return nil
	}
}

// TestPermanentFailuresStopLock: failures that retrying cannot fix stop
// Lock at once, even with a context that never ends, with an error that
// names every master and matches ErrPermanent.
func TestPermanentFailuresStopLock(t *testing.T) {
	tests := map[string]struct {
		serverArgs []string
		opts       []distlock.ClientOption
		url        func(addr string) string
		prepare    func(t *testing.T, s *distlocktest.Server, name string)
		want       string
	}{
		"wrong password": {
			serverArgs: []string{"--requirepass", "right"},
			opts:       []distlock.ClientOption{distlock.WithPassword("wrong")},
			want:       "WRONGPASS",
		},
		"no password": {
			serverArgs: []string{"--requirepass", "right"},
			want:       "NOAUTH",
		},
		"acl user without permission": {
			serverArgs: []string{"--user", "locker", "on", ">pw", "~*", "-@all", "+ping"},
			url:        func(addr string) string { return "redis://locker:pw@" + addr },
			want:       "NOPERM",
		},
		"db index out of range": {
			url:  func(addr string) string { return "redis://" + addr + "/99999" },
			want: "DB index is out of range",
		},
		"lock key of another type": {
			prepare: func(t *testing.T, s *distlocktest.Server, name string) {
				_, err := s.Do("LPUSH", name, "not a lock")
				require.NoError(t, err)
			},
			want: "WRONGTYPE",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			servers := distlocktest.NewServers(t, 3, tc.serverArgs...)
			lock := lockName(t)
			addrs := make([]string, len(servers))
			for i, s := range servers {
				addrs[i] = s.Addr()
				if tc.url != nil {
					addrs[i] = tc.url(s.Addr())
				}
			}
			for _, s := range servers {
				if tc.prepare != nil {
					tc.prepare(t, s, lock)
				}
			}
			c := newClient(t, addrs, tc.opts...)
			m := newMutex(t, c, lock)
			start := time.Now()
			err := within(t, 10*time.Second, func() error {
				_, err := m.Lock(context.Background())
				return err
			})
			require.Error(t, err)
			assert.Less(t, time.Since(start), 3*time.Second, "Lock stops at once")
			assert.ErrorIs(t, err, distlock.ErrNotAcquired)
			assert.ErrorIs(t, err, distlock.ErrPermanent)
			assert.ErrorContains(t, err, tc.want)
			assert.NotContains(t, err.Error(), "right", "no password in the error")
			for _, s := range servers {
				assert.Contains(t, err.Error(), s.Addr(), "the error names every master")
			}

			// Do and the typed layers stop the same way.
			err = within(t, 10*time.Second, func() error {
				return c.Do(context.Background(), lock, func(context.Context) error { return nil })
			})
			assert.ErrorIs(t, err, distlock.ErrPermanent)
			g, err := distlock.NewGuarded[int](c, lock, nil)
			require.NoError(t, err)
			err = within(t, 10*time.Second, func() error {
				return g.Update(context.Background(), func(context.Context, *int) error { return nil })
			})
			assert.ErrorIs(t, err, distlock.ErrPermanent)
			e, err := distlock.NewElection[string](c, lock, nil)
			require.NoError(t, err)
			err = within(t, 10*time.Second, func() error {
				return e.Run(context.Background(), "me", func(context.Context) error { return nil })
			})
			assert.ErrorIs(t, err, distlock.ErrPermanent)
		})
	}
}

// TestPermanentFailureOnAMinority: while a quorum is still possible, Lock
// goes on, and the refusing master is named with ErrPermanent.
func TestPermanentFailureOnAMinority(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	_, err := servers[0].Do("LPUSH", name, "not a lock")
	require.NoError(t, err)
	m := newMutex(t, c, name)
	lease, err := m.Lock(context.Background())
	require.NoError(t, err, "two masters of three are a quorum")

	require.NoError(t, lease.Unlock(context.Background()))

	// With a second master down, the refusing master leaves no quorum for
	// now, but not for good: Lock goes on until its context ends, and the
	// error names the refusing master.
	require.NoError(t, servers[1].Kill())
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = m.Lock(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Lock went on until ctx ended")
	assert.ErrorIs(t, err, distlock.ErrPermanent)
	assert.ErrorContains(t, err, servers[0].Addr()+": distlock: permanent failure: WRONGTYPE")
	assert.ErrorContains(t, err, servers[1].Addr())
}

// TestTransientBusyIsRetried: BUSY (a long script on the master) is
// transient: Lock waits it out.
func TestTransientBusyIsRetried(t *testing.T) {
	s := distlocktest.NewServer(t, "--lua-time-limit", "10")
	c := newClient(t, []string{s.Addr()})
	m := newMutex(t, c, lockName(t))
	go func() { _, _ = s.Do("EVAL", "while true do end", "0") }() // times out on our side; runs on
	require.Eventually(t, func() bool {
		_, err := s.Do("PING")
		return err != nil && strings.HasPrefix(err.Error(), "BUSY")
	}, 5*time.Second, 5*time.Millisecond, "the server is busy")
	got := lockAsync(context.Background(), m)
	silent(t, got, 200*time.Millisecond, "Lock returned while the server was busy")
	_, err := s.Do("SCRIPT", "KILL")
	require.NoError(t, err)
	require.NoError(t, recv(t, got, "Lock after the script was killed"))
}

// TestManyMasters: any number of masters, beyond the round's inline
// buffers (8).
func TestManyMasters(t *testing.T) {
	for _, n := range []int{9, 12} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			servers, c := cluster(t, n)
			name := lockName(t)
			m := newMutex(t, c, name, distlock.WithTTL(5*time.Second))
			lease, err := m.Lock(context.Background())
			require.NoError(t, err)
			require.NoError(t, lease.Extend(context.Background()))
			token, err := lease.Token(context.Background())
			require.NoError(t, err)
			assert.NotZero(t, token)
			require.NoError(t, lease.Unlock(context.Background()))

			g, err := distlock.NewGuarded[int](c, name, nil)
			require.NoError(t, err)
			require.NoError(t, g.Update(context.Background(), func(_ context.Context, v *int) error { *v += 2; return nil }))
			v, _, err := g.Load(context.Background())
			require.NoError(t, err)
			assert.Equal(t, 2, v)

			// A quorum of n/2+1 dead: every round fails cleanly, naming each.
			for _, s := range servers[:n/2+1] {
				require.NoError(t, s.Kill())
			}
			_, err = m.TryLock(context.Background())
			var qe *distlock.QuorumError
			require.ErrorAs(t, err, &qe)
			assert.Equal(t, n, qe.Masters)
			assert.Equal(t, n-qe.Agreed, len(qe.Errors), "an entry for every master that did not agree")
		})
	}
}

// TestUnlockOfLostLeaseIsNotHeld: Unlock of a lease already reported lost
// returns ErrNotHeld, still releasing what it can.
func TestUnlockOfLostLeaseIsNotHeld(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(testTimeout))
	name := lockName(t)
	lease, err := newMutex(t, c, name, distlock.WithTTL(time.Second)).TryLock(context.Background())
	require.NoError(t, err)
	require.NoError(t, servers[0].Kill())
	require.NoError(t, servers[1].Kill())
	select {
	case <-lease.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the lease was not reported lost")
	}
	err = lease.Unlock(context.Background())
	assert.ErrorIs(t, err, distlock.ErrNotHeld)
	assert.ErrorIs(t, err, distlock.ErrLeaseLost, "and says why")
	// The round ends once a quorum is impossible; the live master's release
	// is on its way.
	eventuallyHolders(t, servers[2:], name, 0, "released where it could be")
	assert.ErrorIs(t, lease.Unlock(context.Background()), distlock.ErrNotHeld, "twice")
	assert.ErrorIs(t, lease.Extend(context.Background()), distlock.ErrNotHeld)
	_, err = lease.Token(context.Background())
	assert.ErrorIs(t, err, distlock.ErrNotHeld)
}

func must(v any, err error) any {
	if err != nil {
		panic(err)
	}
	return v
}

// TestRenewalErrorNamesEveryMaster: a failed renewal's QuorumError has an
// entry for every master that did not agree: the one that answered "not
// ours" and the one that did not answer.
func TestRenewalErrorNamesEveryMaster(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(testTimeout))
	name := lockName(t)
	lease, err := newMutex(t, c, name, distlock.WithTTL(1500*time.Millisecond)).TryLock(context.Background())
	require.NoError(t, err)
	_, err = servers[0].Do("SET", name, "someone else")
	require.NoError(t, err)
	proxies[1].SetBlackhole(true)
	select {
	case <-lease.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the lease was not reported lost")
	}
	var qe *distlock.QuorumError
	require.ErrorAs(t, lease.Err(), &qe)
	assert.Equal(t, "extend", qe.Op)
	require.Len(t, qe.Errors, 3-qe.Agreed, "%v", qe)
	assert.Equal(t, proxies[0].Addr(), qe.Errors[0].Addr)
	assert.Equal(t, proxies[1].Addr(), qe.Errors[1].Addr)
	// The round in flight at the deadline, or the last one decided: master
	// 0 said "not ours" (or had not answered yet), master 1 never answered.
	assert.Regexp(t, "another owner|no answer", qe.Errors[0].Error())
}

// TestQuorumErrorOps: every round reports one of the documented Op values.
func TestQuorumErrorOps(t *testing.T) {
	servers, c := cluster(t, 3, distlock.WithMasterTimeout(testTimeout))
	name := lockName(t)
	m := newMutex(t, c, name, distlock.WithoutRenewal(), distlock.WithTTL(time.Minute))
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	g, err := distlock.NewGuarded[int](c, name+":g", nil)
	require.NoError(t, err)
	e, err := distlock.NewElection[string](c, name+":e", nil)
	require.NoError(t, err)
	for _, s := range servers {
		require.NoError(t, s.Kill())
	}
	op := func(err error) string {
		var qe *distlock.QuorumError
		if !errors.As(err, &qe) {
			return fmt.Sprintf("not a QuorumError: %v", err)
		}
		return qe.Op
	}
	_, err = m.TryLock(context.Background())
	assert.Equal(t, "acquire", op(err))
	assert.Equal(t, "extend", op(lease.Extend(context.Background())))
	_, err = lease.Token(context.Background())
	assert.Equal(t, "fence", op(err))
	_, _, err = g.Load(context.Background())
	assert.Equal(t, "read", op(err))
	_, _, err = e.Leader(context.Background())
	assert.Equal(t, "leader", op(err))
	assert.Equal(t, "release", op(lease.Unlock(context.Background())))
}

// after master 0 and master 1 and Unlock reports a *QuorumError.
func TestUnlockFastQuorumKeepsOutcome(t *testing.T) {
	servers, proxies, c := proxied(t, 3, distlock.WithMasterTimeout(testTimeout))
	name := lockName(t)
	m := newMutex(t, c, name)
	lease, err := m.Lock(context.Background())
	require.NoError(t, err)

	_, err = servers[1].Do("DEL", name) // master 1 restarted / lost the key
	require.NoError(t, err)
	proxies[2].SetLatency(50 * time.Millisecond) // master 2 answers, a bit later
	require.NoError(t, servers[0].Kill())        // master 0 is down

	err = lease.Unlock(context.Background())
	require.NoError(t, err, "master 1 (missing) + master 2 (deleted) are a quorum that our token is gone")
}

// gives up at once instead of waiting for a connection slot.
func TestMaxClientsIsTransient(t *testing.T) {
	servers := distlocktest.NewServers(t, 3, "--maxclients", "2", "--requirepass", "pw")
	// Fill masters 0 and 1.
	var held []net.Conn
	for _, s := range servers[:2] {
		for range 2 {
			conn, err := net.Dial("tcp", s.Addr())
			require.NoError(t, err)
			_, err = conn.Write([]byte("AUTH pw\r\n"))
			require.NoError(t, err)
			buf := make([]byte, 64)
			_, _ = conn.Read(buf)
			held = append(held, conn)
		}
	}
	c := newClient(t, distlocktest.Addrs(servers), distlock.WithMasterTimeout(testTimeout), distlock.WithPassword("pw"))
	m := newMutex(t, c, lockName(t))
	go func() {
		time.Sleep(300 * time.Millisecond)
		for _, conn := range held {
			conn.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	lease, err := m.Lock(ctx)
	if err != nil {
		t.Logf("Lock failed after %v: %v (ErrPermanent: %v)", time.Since(start), err, errors.Is(err, distlock.ErrPermanent))
	}
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(context.Background()))
}

// situation, loses the lease at once).
func TestTokenNotOursEndsLease(t *testing.T) {
	servers, c := cluster(t, 3)
	name := lockName(t)
	m := newMutex(t, c, name, distlock.WithTTL(30*time.Second))
	lease, err := m.Lock(context.Background())
	require.NoError(t, err)
	for _, s := range servers[:2] {
		_, err := s.Do("SET", name, "someone-else", "PX", 30000)
		require.NoError(t, err)
	}
	_, err = lease.Token(context.Background())
	require.ErrorIs(t, err, distlock.ErrNotHeld)
	select {
	case <-lease.Done():
	default:
		t.Errorf("Token said a quorum holds another owner's token, yet the lease is still held: Err=%v, Done open", lease.Err())
	}
	_ = lease.Unlock(context.Background())
}

// returned.
func TestScriptsThatCannotBeLoaded(t *testing.T) {
	servers := distlocktest.NewServers(t, 3, "--user", "locker", "on", ">pw", "~*", "&*", "+@all", "-script")
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = "redis://locker:pw@" + s.Addr()
	}
	c := newClient(t, addrs, distlock.WithMasterTimeout(testTimeout))
	m := newMutex(t, c, lockName(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := m.Lock(ctx)
	t.Logf("Lock: %v", err)
	evalshas := func() int64 {
		v, err := servers[0].Do("INFO", "commandstats")
		require.NoError(t, err)
		for _, line := range strings.Split(string(v.([]byte)), "\r\n") {
			if strings.HasPrefix(line, "cmdstat_evalsha:") {
				var calls int64
				_, _ = fmt.Sscanf(strings.SplitN(strings.TrimPrefix(line, "cmdstat_evalsha:calls="), ",", 2)[0], "%d", &calls)
				return calls
			}
		}
		return 0
	}
	a := evalshas()
	time.Sleep(500 * time.Millisecond)
	b := evalshas()
	t.Logf("EVALSHA calls on master 0 in 500ms after Lock returned: %d", b-a)
	assert.ErrorIs(t, err, distlock.ErrPermanent)
	assert.Less(t, b-a, int64(10), "releases re-sent in a loop")
}

// return when the lock was not acquired. Do after Close returns bare ErrClosed.
func TestDoAfterCloseIsNotAcquired(t *testing.T) {
	_, c := cluster(t, 1)
	require.NoError(t, c.Close())
	err := c.Do(context.Background(), lockName(t), func(context.Context) error { return nil })
	require.ErrorIs(t, err, distlock.ErrClosed)
	assert.ErrorIs(t, err, distlock.ErrNotAcquired)
}

// TestPermanentWithDownMaster: two of three masters refuse for good and
// the third is down: the down master fails first in every round, and Lock
// still stops at once instead of retrying until ctx ends.
func TestPermanentWithDownMaster(t *testing.T) {
	bad := distlocktest.NewServers(t, 2, "--requirepass", "right")
	good := distlocktest.NewServer(t)
	addrs := []string{good.Addr(), bad[0].Addr(), bad[1].Addr()}
	require.NoError(t, good.Kill())
	c := newClient(t, addrs, distlock.WithMasterTimeout(testTimeout))
	m := newMutex(t, c, lockName(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := m.Lock(ctx)
	assert.ErrorIs(t, err, distlock.ErrPermanent)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Lock stops at once, not when ctx ends")
	assert.Less(t, time.Since(start), 5*time.Second)
}

// TestReplicaIsPermanent: a master address that points at a replica never
// counts (it would refuse every write with READONLY); its fence is a
// permanent failure, so with a quorum of them Lock stops.
func TestReplicaIsPermanent(t *testing.T) {
	primary := distlocktest.NewServer(t)
	host, port, _ := strings.Cut(primary.Addr(), ":")
	replicas := distlocktest.NewServers(t, 2, "--replicaof", host, port)
	c := newClient(t, []string{primary.Addr(), replicas[0].Addr(), replicas[1].Addr()})
	err := within(t, 10*time.Second, func() error {
		_, err := newMutex(t, c, lockName(t)).Lock(context.Background())
		return err
	})
	assert.ErrorIs(t, err, distlock.ErrPermanent)
	assert.ErrorIs(t, err, distlock.ErrMasterFenced, "a replica does not count: nothing is sent to it")
	assert.ErrorContains(t, err, "is a replica")
}

// TestOutOfMemoryIsTransient: a master out of memory (noeviction) refuses
// the acquire with OOM, which can pass: Lock waits, and takes the lock once
// the limit is raised.
func TestOutOfMemoryIsTransient(t *testing.T) {
	s := distlocktest.NewServer(t, "--maxmemory-policy", "noeviction")
	c := newClient(t, []string{s.Addr()})
	m := newMutex(t, c, lockName(t))
	filler := strings.Repeat("x", 64<<10)
	for i := range 32 { // 2 MB
		_, err := s.Do("SET", fmt.Sprint("filler:", i), filler)
		require.NoError(t, err)
	}
	_, err := s.Do("CONFIG", "SET", "maxmemory", "1mb") // now over the limit: every write is refused
	require.NoError(t, err)
	_, err = m.TryLock(context.Background())
	require.ErrorContains(t, err, "OOM")
	assert.NotErrorIs(t, err, distlock.ErrPermanent)
	got := lockAsync(context.Background(), m)
	silent(t, got, 300*time.Millisecond, "Lock returned while the master was out of memory")
	_, err = s.Do("CONFIG", "SET", "maxmemory", "0") // the operator raises the limit
	require.NoError(t, err)
	require.NoError(t, recv(t, got, "Lock after memory was freed"))
}
