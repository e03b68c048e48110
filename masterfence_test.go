package distlock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// of returns the events of kind k so far.
func (r *recorder) of(k distlock.EventKind) []distlock.Event {
	return r.find(func(ev distlock.Event) bool { return ev.Kind == k })
}

// waitFor waits (bounded) for an event of kind k about master and returns
// the first one.
func (r *recorder) waitFor(t *testing.T, k distlock.EventKind, master string) distlock.Event {
	t.Helper()
	return r.waitForErr(t, k, master, "")
}

// waitForErr waits (bounded) for an event of kind k about master whose error
// contains substr, and returns the first one.
func (r *recorder) waitForErr(t *testing.T, k distlock.EventKind, master, substr string) distlock.Event {
	t.Helper()
	return r.await(t, fmt.Sprintf("%v for %s with %q", k, master, substr), func(ev distlock.Event) bool {
		return ev.Kind == k && ev.Master == master && (substr == "" || ev.Err != nil && strings.Contains(ev.Err.Error(), substr))
	})
}

// fencedClient returns a Client over addrs with the restart fence on (its
// length the lock's TTL plus drift, at least DefaultTTL's), a mock clock, and
// a recorder of its events.
func fencedClient(t *testing.T, addrs []string) (*distlock.Client, *clock.Mock, *recorder) {
	t.Helper()
	clk, rec := clock.NewMock(), &recorder{}
	c := newClient(t, addrs, distlock.WithRestartFence(0), distlock.WithClock(clk), distlock.WithObserver(rec.observe))
	return c, clk, rec
}

// passFirstContact makes c meet its masters, which fences them (they are
// seconds old), and moves clk past the fence of length.
func passFirstContact(t *testing.T, c *distlock.Client, log *recorder, clk *clock.Mock, addrs []string, length time.Duration) {
	t.Helper()
	_, err := newMutex(t, c, lockName(t)).TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced)
	for _, addr := range addrs {
		log.waitForErr(t, distlock.EventMasterFenced, addr, "started")
	}
	clk.Add(length)
	for _, addr := range addrs {
		log.waitFor(t, distlock.EventMasterUnfenced, addr)
	}
}

// fenceFor is the restart fence of a Client whose longest lock TTL is ttl:
// ttl plus its default drift.
func fenceFor(ttl time.Duration) time.Duration {
	return ttl + time.Duration(float64(ttl)*distlock.DefaultDriftFactor) + distlock.DefaultDriftConstant
}

// defaultFence is the default restart fence: DefaultTTL plus its drift.
var defaultFence = fenceFor(distlock.DefaultTTL)

// fencedOn reports whether err names master addr as fenced.
func fencedOn(err error, addr string) bool {
	var qe *distlock.QuorumError
	if !errors.As(err, &qe) {
		return false
	}
	for _, me := range qe.Errors {
		if me.Addr == addr && errors.Is(me.Err, distlock.ErrMasterFenced) {
			return true
		}
	}
	return false
}

// restartTwo restarts servers 0 and 1 one after the other, as a rolling
// restart without persistence: only server 2 keeps the lock keys.
func restartTwo(t *testing.T, servers []*distlocktest.Server) {
	t.Helper()
	require.NoError(t, servers[0].Restart())
	require.NoError(t, servers[1].Restart())
}

// TestRestartFenceStopsDoubleGrant is the hazard of restarts without
// persistence: A holds a lock on three masters; two of them restart, empty.
// With the fence off, B then takes the lock A still holds. With it on (the
// default), B's Client sees both masters' run ids change and does not count
// them until the fence length has passed.
func TestRestartFenceStopsDoubleGrant(t *testing.T) {
	for _, fenceOn := range []bool{false, true} {
		t.Run(map[bool]string{false: "off", true: "on"}[fenceOn], func(t *testing.T) {
			fence := fenceFor(time.Minute) // the TTL of the locks below
			servers := distlocktest.NewServers(t, 3)
			addrs := distlocktest.Addrs(servers)
			name := lockName(t)
			a := newClient(t, addrs)
			lease, err := newMutex(t, a, name, distlock.WithTTL(time.Minute), distlock.WithoutRenewal()).Lock(context.Background())
			require.NoError(t, err)

			// B knows the masters before they restart. A mock clock: the
			// fence lasts until the test moves it.
			var opts []distlock.ClientOption
			if fenceOn {
				opts = append(opts, distlock.WithRestartFence(0))
			}
			clk := clock.NewMock()
			log := &recorder{}
			b := newClient(t, addrs, append(opts, distlock.WithClock(clk), distlock.WithObserver(log.observe))...)
			mb := newMutex(t, b, name, distlock.WithTTL(time.Minute))
			if fenceOn {
				passFirstContact(t, b, log, clk, addrs, fence)
			}
			_, err = mb.TryLock(context.Background())
			require.ErrorIs(t, err, distlock.ErrLocked)

			restartTwo(t, servers)
			deadline := time.Now().Add(10 * time.Second)
			for {
				l2, err := mb.TryLock(context.Background())
				if !fenceOn {
					if err == nil {
						// The hazard: A's lease looks valid, and B holds too.
						assert.True(t, lease.Until().After(time.Now()), "A still believes it holds")
						require.NoError(t, l2.Unlock(context.Background()))
						return
					}
				} else {
					require.Error(t, err, "B must not take a lock A holds on the one master that kept it")
					if fencedOn(err, addrs[0]) && fencedOn(err, addrs[1]) {
						break
					}
				}
				require.True(t, time.Now().Before(deadline), "last error: %v", err)
				time.Sleep(10 * time.Millisecond)
			}
			for _, addr := range addrs[:2] {
				ev := log.waitForErr(t, distlock.EventMasterFenced, addr, "run id changed")
				assert.ErrorIs(t, ev.Err, distlock.ErrMasterFenced)
				assert.Equal(t, fence, ev.Duration)
			}

			// A's key is on server 2 alone; even past the fence B cannot
			// win there while A's lease lives.
			_ = lease.Unlock(context.Background()) // fails where the connection broke: no quorum
			_, err = mb.TryLock(context.Background())
			assert.True(t, fencedOn(err, addrs[0]), "still fenced before the fence length passed: %v", err)
			clk.Add(fence - time.Millisecond)
			_, err = mb.TryLock(context.Background())
			assert.True(t, fencedOn(err, addrs[0]), "still fenced 1ms before the end: %v", err)
			clk.Add(time.Millisecond)
			require.Eventually(t, func() bool { return len(log.of(distlock.EventMasterUnfenced)) == 5 }, 10*time.Second, time.Millisecond)
			l2, err := mb.TryLock(context.Background())
			require.NoError(t, err, "the fence lifts after its length")
			require.NoError(t, l2.Unlock(context.Background()))
		})
	}
}

// TestRestartFenceFirstContact: a Client that first meets a master that
// started less than the fence length ago fences it for what is left: the
// master may have restarted while another client's lease was alive.
func TestRestartFenceFirstContact(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	c, clk, log := fencedClient(t, addrs)
	m := newMutex(t, c, lockName(t))
	_, err := m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrNotAcquired)
	assert.ErrorIs(t, err, distlock.ErrMasterFenced)
	for _, addr := range addrs {
		ev := log.waitFor(t, distlock.EventMasterFenced, addr)
		assert.Contains(t, ev.Err.Error(), "started")
		assert.LessOrEqual(t, ev.Duration, defaultFence)
		assert.Greater(t, ev.Duration, defaultFence-5*time.Second, "the servers are a few seconds old at most")
	}
	st := c.Stats()
	assert.Zero(t, st.Up, "fenced masters are not up")
	for _, ms := range st.Masters {
		assert.Equal(t, "fenced", ms.State)
		assert.Contains(t, ms.Reason, "restart fence")
	}
	clk.Add(defaultFence)
	for _, addr := range addrs {
		log.waitFor(t, distlock.EventMasterUnfenced, addr)
	}
	assert.Equal(t, 3, c.Stats().Up)
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(context.Background()))
}

// TestRestartFenceLastsTheLongestTTL: the fence lasts at least the longest
// TTL (plus drift) of the Client's locks, even when WithRestartFence is
// shorter.
func TestRestartFenceLastsTheLongestTTL(t *testing.T) {
	s := distlocktest.NewServer(t)
	clk := clock.NewMock()
	log := &recorder{}
	c := newClient(t, []string{s.Addr()}, distlock.WithRestartFence(time.Second), distlock.WithClock(clk), distlock.WithObserver(log.observe))
	ttl := time.Hour
	m := newMutex(t, c, lockName(t), distlock.WithTTL(ttl))
	_, err := m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced)
	ev := log.waitFor(t, distlock.EventMasterFenced, s.Addr())
	want := fenceFor(ttl)
	assert.LessOrEqual(t, ev.Duration, want)
	assert.Greater(t, ev.Duration, want-5*time.Second)
}

// TestReleasesReachAFencedMaster: a fenced master does not count, but
// releases still go to it, so no key is left behind there.
func TestReleasesReachAFencedMaster(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	c, clk, log := fencedClient(t, addrs)
	name := lockName(t)
	m := newMutex(t, c, name, distlock.WithTTL(time.Minute), distlock.WithoutRenewal())
	passFirstContact(t, c, log, clk, addrs, fenceFor(time.Minute))
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	eventuallyHolders(t, servers, name, 3, "held everywhere")

	// Server 0's connection breaks and comes back with a new identity, but
	// the key is put back by hand: as if the restart kept it.
	token, err := servers[1].Do("GET", name)
	require.NoError(t, err)
	require.NoError(t, servers[0].Restart())
	_, err = servers[0].Do("SET", name, token, "PX", 60000)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		l, err := newMutex(t, c, lockName(t)).TryLock(context.Background())
		if err == nil {
			_ = l.Unlock(context.Background())
		}
		for _, ev := range log.of(distlock.EventMasterFenced) {
			if ev.Master == addrs[0] && strings.Contains(ev.Err.Error(), "run id changed") {
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "traffic until the Client reconnects to server 0 and fences it")
	require.NoError(t, lease.Unlock(context.Background()))
	eventuallyHolders(t, servers, name, 0, "released everywhere, the fenced master too")
}

// TestReplicaPromotedIsFenced: a replica never counts (its writes fail
// anyway); it is checked again every 5s, on the live connection, and once it
// is promoted (a new replication id that continues its master's) the restart
// fence keeps it out for the fence length: it may lack keys its master had.
func TestReplicaPromotedIsFenced(t *testing.T) {
	primary := distlocktest.NewServer(t)
	replica := distlocktest.NewServer(t, "--replicaof", "127.0.0.1", strings.TrimPrefix(primary.Addr(), "127.0.0.1:"))
	waitReplicating(t, primary)
	c, clk, log := fencedClient(t, []string{replica.Addr()})
	m := newMutex(t, c, lockName(t))
	_, err := m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced)
	assert.Contains(t, err.Error(), "is a replica")
	log.waitForErr(t, distlock.EventMasterFenced, replica.Addr(), "is a replica")
	clk.Add(defaultFence) // past the first-contact fence; the recheck is due
	_, err = m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced, "checked again: still a replica")
	assert.Contains(t, err.Error(), "is a replica")

	_, err = replica.Do("REPLICAOF", "NO", "ONE")
	require.NoError(t, err)
	connects := c.Stats().Masters[0].RoundTrips
	clk.Add(5 * time.Second) // the next recheck
	_, err = m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced)
	assert.Contains(t, err.Error(), "promoted since the last check")
	assert.NotContains(t, err.Error(), "is a replica")
	assert.Greater(t, c.Stats().Masters[0].RoundTrips, connects, "checked on the live connection")
	clk.Add(defaultFence)
	log.waitFor(t, distlock.EventMasterUnfenced, replica.Addr())
	lease, err := m.TryLock(context.Background())
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(context.Background()))
}

// TestDemotedAndPromotedOnALiveConnection: a master demoted to a replica
// (a full sync replaces its data, the lock key with it) and promoted again,
// on the Client's open connection: the READONLY replies in between have the
// Client check it again, and the promotion fences it, so the lock its
// holder still holds is not granted again (found by review).
func TestDemotedAndPromotedOnALiveConnection(t *testing.T) {
	a, b, clk, log, m := oneFencedMaster(t)
	name := m.Name()
	l1, err := m.TryLock(context.Background())
	require.NoError(t, err)

	demote(t, a, b)
	_, err = m.TryLock(context.Background()) // traffic while a replica: READONLY
	require.Error(t, err)
	_, err = a.Do("REPLICAOF", "NO", "ONE")
	require.NoError(t, err)
	require.Equal(t, 0, holders(t, []*distlocktest.Server{a}, name), "the sync flushed the lock key")

	// Still fenced as the replica it was last seen as (if the idle check
	// ran before the READONLY), or fenced for the promotion.
	_, err = m.TryLock(context.Background())
	require.Error(t, err, "a second holder while l1 (TTL 1m) is valid until %v", l1.Until())
	assert.ErrorIs(t, err, distlock.ErrMasterFenced)
	clk.Add(5 * time.Second) // a replica's recheck is due
	_, err = m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced)
	assert.Contains(t, err.Error(), "promoted")
	log.waitForErr(t, distlock.EventMasterFenced, a.Addr(), "promoted")
}

// TestDemotedAndPromotedWithoutFence is the hazard the fence guards: with
// it off, the same demotion and promotion let a second holder take the
// lock the first still holds (the sync flushed its key). Only the replica
// check kept the master out while it was a replica.
func TestDemotedAndPromotedWithoutFence(t *testing.T) {
	a, b := distlocktest.NewServer(t), distlocktest.NewServer(t)
	clk := clock.NewMock()
	c := newClient(t, []string{a.Addr()}, distlock.WithClock(clk)) // fence off
	m := newMutex(t, c, lockName(t), distlock.WithTTL(time.Minute), distlock.WithoutRenewal())
	l1, err := m.TryLock(context.Background())
	require.NoError(t, err)
	demote(t, a, b)
	_, err = m.TryLock(context.Background())
	require.Error(t, err, "a replica refuses")
	_, err = a.Do("REPLICAOF", "NO", "ONE")
	require.NoError(t, err)
	clk.Add(5 * time.Second) // the replica's recheck
	l2, err := m.TryLock(context.Background())
	require.NoError(t, err, "the hazard: a second holder")
	assert.True(t, l1.Until().After(clk.Now()), "while the first still holds")
	require.NoError(t, l2.Unlock(context.Background()))
}

// waitReplicating waits until primary has a replica online.
func waitReplicating(t *testing.T, primary *distlocktest.Server) {
	t.Helper()
	require.Eventually(t, func() bool {
		v, err := primary.Do("INFO", "replication")
		return err == nil && strings.Contains(string(v.([]byte)), "connected_slaves:1")
	}, 10*time.Second, 10*time.Millisecond)
}

// TestMasterChecks: a master that has replicas, or an eviction policy that
// can evict lock keys, is reported by default and counts; with
// WithStrictMasters it is fenced, named in the error, and counts again once
// a new connection passes the check.
func TestMasterChecks(t *testing.T) {
	evicting := []string{"--maxmemory", "100mb", "--maxmemory-policy", "volatile-ttl"}
	cases := []struct {
		name  string
		start func(t *testing.T) *distlocktest.Server
		want  string
		fix   []any // a CONFIG SET that fixes it; nil: none
	}{
		{"evicting", func(t *testing.T) *distlocktest.Server { return distlocktest.NewServer(t, evicting...) },
			"maxmemory-policy volatile-ttl", []any{"SET", "maxmemory-policy", "noeviction"}},
		{"replicas", func(t *testing.T) *distlocktest.Server {
			s := distlocktest.NewServer(t)
			distlocktest.NewServer(t, "--replicaof", "127.0.0.1", strings.TrimPrefix(s.Addr(), "127.0.0.1:"))
			waitReplicating(t, s)
			return s
		}, "has 1 replica(s)", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name+"/report", func(t *testing.T) {
			s := tc.start(t)
			log := &recorder{}
			c := newClient(t, []string{s.Addr()}, distlock.WithObserver(log.observe))
			lease, err := newMutex(t, c, lockName(t)).TryLock(context.Background())
			require.NoError(t, err, "by default it counts")
			require.NoError(t, lease.Unlock(context.Background()))
			ev := log.waitFor(t, distlock.EventMasterWarning, s.Addr())
			assert.Contains(t, ev.Err.Error(), tc.want)
		})
		t.Run(tc.name+"/strict", func(t *testing.T) {
			s := tc.start(t)
			clk := clock.NewMock()
			c := newClient(t, []string{s.Addr()}, distlock.WithStrictMasters(), distlock.WithClock(clk))
			m := newMutex(t, c, lockName(t))
			_, err := m.TryLock(context.Background())
			require.ErrorIs(t, err, distlock.ErrMasterFenced)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "WithStrictMasters")
			if tc.fix == nil {
				return
			}
			_, err = s.Do("CONFIG", tc.fix...)
			require.NoError(t, err)
			_, err = m.TryLock(context.Background())
			require.ErrorIs(t, err, distlock.ErrMasterFenced, "checked again only on a new connection")
			clk.Add(5 * time.Second)
			require.Eventually(t, func() bool {
				lease, err := m.TryLock(context.Background())
				if err != nil {
					return false
				}
				return lease.Unlock(context.Background()) == nil
			}, 10*time.Second, 10*time.Millisecond, "a new connection passes the check")
		})
	}
}

// TestEvictionHazard: the hazard the eviction check is for. A master with
// maxmemory-policy volatile-ttl evicts the lock key (it has the shortest
// TTL) under memory pressure, and another client takes the lock its holder
// still believes it holds. The default reports the master; WithStrictMasters
// refuses it, so no lock is granted there at all.
func TestEvictionHazard(t *testing.T) {
	s := distlocktest.NewServer(t, "--maxmemory", "4mb", "--maxmemory-policy", "volatile-ttl")
	log := &recorder{}
	c := newClient(t, []string{s.Addr()}, distlock.WithObserver(log.observe))
	name := lockName(t)
	lease, err := newMutex(t, c, name, distlock.WithTTL(time.Minute)).Lock(context.Background())
	require.NoError(t, err)
	assert.Contains(t, log.waitFor(t, distlock.EventMasterWarning, s.Addr()).Err.Error(), "can evict lock keys")

	// Memory pressure: keys with longer TTLs than the lock's.
	big := strings.Repeat("x", 64<<10)
	for i := 0; holders(t, []*distlocktest.Server{s}, name) == 1; i++ {
		require.Less(t, i, 1000, "the lock key was never evicted")
		_, err := s.Do("SET", "filler:"+strings.Repeat("0", i%7)+string(rune('a'+i%26))+time.Now().String(), big, "EX", 3600)
		require.NoError(t, err)
	}
	other := newClient(t, []string{s.Addr()})
	l2, err := newMutex(t, other, name).TryLock(context.Background())
	require.NoError(t, err, "the hazard: a second holder")
	assert.NoError(t, lease.Err(), "the first holder is not told yet")
	require.NoError(t, l2.Unlock(context.Background()))

	strict := newClient(t, []string{s.Addr()}, distlock.WithStrictMasters())
	_, err = newMutex(t, strict, lockName(t)).TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced)
	assert.Contains(t, err.Error(), "can evict lock keys")
}

// TestInfoRefused: a master whose ACL forbids INFO cannot be checked: it is
// reported (it counts), and refused with WithStrictMasters.
func TestInfoRefused(t *testing.T) {
	s := distlocktest.NewServer(t, "--user", "noinfo", "on", ">pw", "~*", "&*", "+@all", "-info")
	addr := "redis://noinfo:pw@" + s.Addr()
	log := &recorder{}
	c := newClient(t, []string{addr}, distlock.WithObserver(log.observe))
	lease, err := newMutex(t, c, lockName(t)).TryLock(context.Background())
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(context.Background()))
	ev := log.waitFor(t, distlock.EventMasterWarning, s.Addr())
	assert.Contains(t, ev.Err.Error(), "cannot be checked")
	assert.NotContains(t, ev.Err.Error(), "pw@")

	strict := newClient(t, []string{addr}, distlock.WithStrictMasters())
	_, err = newMutex(t, strict, lockName(t)).TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced)
	assert.Contains(t, err.Error(), "INFO")
}

// TestRestartFenceOption: a negative fence is refused.
func TestRestartFenceOption(t *testing.T) {
	_, err := distlock.NewClient(nil, distlock.WithRestartFence(-time.Second))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "WithRestartFence")
}

// TestFenceAndChecksAreLogged: a fenced master is logged at Warn, its fence's
// end at Info, a failed check at Warn; never with the password.
func TestFenceAndChecksAreLogged(t *testing.T) {
	const password = "fence-secret-pw"
	s := distlocktest.NewServer(t, "--requirepass", password, "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
	clk := clock.NewMock()
	log := &recorder{}
	c, err := distlock.NewClient([]string{"redis://:" + password + "@" + s.Addr()},
		append(log.options(), distlock.WithRestartFence(0), distlock.WithClock(clk))...)
	require.NoError(t, err)
	defer c.Close()
	passFirstContact(t, c, log, clk, []string{s.Addr()}, defaultFence)
	log.waitFor(t, distlock.EventMasterWarning, s.Addr())
	require.NoError(t, c.Close()) // delivers the events queued
	logs := log.logs()
	for _, want := range []string{
		`"level":"WARN","msg":"distlock: master fenced"`, `"level":"INFO","msg":"distlock: master counts again"`,
		`"level":"WARN","msg":"distlock: master failed a check"`, `allkeys-lru`, `"master":"` + s.Addr() + `"`,
	} {
		assert.Contains(t, logs, want)
	}
	assert.NotContains(t, logs, password)
}

// TestIdentityCheckedAfterIdle: with no traffic while the master was demoted
// and promoted again (no READONLY to notice), the first batch after an idle
// second is preceded by INFO on the live connection, which sees the new
// replication id: the lock the holder still holds is not granted again.
func TestIdentityCheckedAfterIdle(t *testing.T) {
	a, b, _, _, m := oneFencedMaster(t)
	name := m.Name()
	_, err := m.TryLock(context.Background())
	require.NoError(t, err)
	last := time.Now()

	demote(t, a, b)
	_, err = a.Do("REPLICAOF", "NO", "ONE")
	require.NoError(t, err)
	require.Equal(t, 0, holders(t, []*distlocktest.Server{a}, name), "the sync flushed the lock key")
	time.Sleep(time.Until(last.Add(1200 * time.Millisecond))) // an idle second

	_, err = m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced, "the lock must not be granted again")
	assert.Contains(t, err.Error(), "replication id changed")
}

// TestBacklogFreedIsNoPromotion: a master frees its replication backlog
// (and takes a new replication id with no history) when its last replica has
// been gone for repl-backlog-ttl; its data did not change, so it is not
// fenced (found by review).
func TestBacklogFreedIsNoPromotion(t *testing.T) {
	p := distlocktest.NewServer(t, "--repl-backlog-ttl", "1")
	r := distlocktest.NewServer(t, "--replicaof", "127.0.0.1", strings.TrimPrefix(p.Addr(), "127.0.0.1:"))
	waitReplicating(t, p)
	c, clk, log := fencedClient(t, []string{p.Addr()})
	passFirstContact(t, c, log, clk, []string{p.Addr()}, defaultFence)
	replid := func() string {
		v, err := p.Do("INFO", "replication")
		require.NoError(t, err)
		for _, l := range strings.Split(string(v.([]byte)), "\r\n") {
			if id, ok := strings.CutPrefix(l, "master_replid:"); ok {
				return id
			}
		}
		return ""
	}
	before := replid()
	require.NoError(t, r.Kill())
	require.Eventually(t, func() bool { return replid() != before }, 15*time.Second, 100*time.Millisecond, "the backlog is freed")
	time.Sleep(1200 * time.Millisecond) // an idle second: the next batch checks the master
	lease, err := newMutex(t, c, lockName(t)).TryLock(context.Background())
	require.NoError(t, err, "not fenced: its data did not change")
	require.NoError(t, lease.Unlock(context.Background()))
	assert.Len(t, log.of(distlock.EventMasterFenced), 1, "only the first contact's fence")
}

// oneFencedMaster starts master a (and b, to demote it to), a Client over a
// with the restart fence on and a mock clock, past its first-contact fence,
// and a Mutex with a one-minute TTL and no renewal.
func oneFencedMaster(t *testing.T) (a, b *distlocktest.Server, clk *clock.Mock, log *recorder, m *distlock.Mutex) {
	t.Helper()
	a, b = distlocktest.NewServer(t), distlocktest.NewServer(t)
	var c *distlock.Client
	c, clk, log = fencedClient(t, []string{a.Addr()})
	m = newMutex(t, c, lockName(t), distlock.WithTTL(time.Minute), distlock.WithoutRenewal())
	passFirstContact(t, c, log, clk, []string{a.Addr()}, fenceFor(time.Minute))
	return a, b, clk, log, m
}

// demote makes a a replica of b and waits for the sync, which replaces a's
// data with b's.
func demote(t *testing.T, a, b *distlocktest.Server) {
	t.Helper()
	_, err := a.Do("REPLICAOF", "127.0.0.1", strings.TrimPrefix(b.Addr(), "127.0.0.1:"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		v, err := a.Do("INFO", "replication")
		return err == nil && strings.Contains(string(v.([]byte)), "master_link_status:up")
	}, 10*time.Second, 10*time.Millisecond)
}

// TestReplicaPromotedThenBacklogFreed: a replica this Client saw is promoted,
// and it frees its backlog (taking a new replication id with no history)
// before the next check: the change of role alone starts the restart fence
// (found by review).
func TestReplicaPromotedThenBacklogFreed(t *testing.T) {
	p := distlocktest.NewServer(t)
	r := distlocktest.NewServer(t, "--repl-backlog-ttl", "1", "--replicaof", "127.0.0.1", strings.TrimPrefix(p.Addr(), "127.0.0.1:"))
	waitReplicating(t, p)
	require.Eventually(t, func() bool { // synced: the replica has a backlog to free once promoted
		v, err := r.Do("INFO", "replication")
		return err == nil && strings.Contains(string(v.([]byte)), "master_link_status:up") && strings.Contains(string(v.([]byte)), "repl_backlog_active:1")
	}, 10*time.Second, 10*time.Millisecond)
	c, clk, _ := fencedClient(t, []string{r.Addr()})
	m := newMutex(t, c, lockName(t))
	_, err := m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced)
	clk.Add(defaultFence)
	_, err = m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced, "still a replica")
	_, err = r.Do("REPLICAOF", "NO", "ONE")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		v, err := r.Do("INFO", "replication")
		return err == nil && strings.Contains(string(v.([]byte)), "master_replid2:0000000000000000000000000000000000000000")
	}, 15*time.Second, 100*time.Millisecond, "the backlog is freed")
	clk.Add(5 * time.Second) // the replica's recheck
	_, err = m.TryLock(context.Background())
	require.ErrorIs(t, err, distlock.ErrMasterFenced, "a promoted replica gets the restart fence")
	assert.Contains(t, err.Error(), "it was a replica")
	assert.NotErrorIs(t, err, distlock.ErrPermanent, "a master now: the fence ends with time")
}
