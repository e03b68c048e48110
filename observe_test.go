package distlock_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// recorder keeps a Client's events and log records.
type recorder struct {
	mu     sync.Mutex
	events []distlock.Event
	logBuf bytes.Buffer
	c      *distlock.Client // Stats is called from the observer, when set
	// inspectErrs: what the observer's Inspect on master events found.
	inspectErrs []error
}

func (r *recorder) observe(ev distlock.Event) {
	r.mu.Lock()
	c := r.c
	r.mu.Unlock()
	var inspected error
	if c != nil {
		_ = c.Stats() // the observer may call the Client
		if ev.Kind == distlock.EventMasterDown {
			// A round from the observer: master 0 must answer it.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := c.Inspect(ctx, "observer-inspects")
			cancel()
			inspected = cmp.Or(err, st.Masters[0].Err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	r.inspectErrs = append(r.inspectErrs, inspected)
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logBuf.Write(p)
}

func (r *recorder) logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logBuf.String()
}

// find returns the events that match.
func (r *recorder) find(match func(distlock.Event) bool) []distlock.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []distlock.Event
	for _, ev := range r.events {
		if match(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// await waits (bounded) until an event matches.
func (r *recorder) await(t *testing.T, what string, match func(distlock.Event) bool) distlock.Event {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if evs := r.find(match); len(evs) > 0 {
			return evs[0]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %s event within %v", what, waitTimeout)
	return distlock.Event{}
}

// options returns the observer and a JSON logger at Debug into r.
func (r *recorder) options() []distlock.ClientOption {
	return []distlock.ClientOption{
		distlock.WithObserver(r.observe),
		distlock.WithLogger(slog.New(slog.NewJSONHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}
}

// TestObserverSeesFaults: the observer and the logger see masters go down
// and come back, a renewal fail and recover, and a lease lost, with the
// lock's name and the masters' addresses, and never the password.
func TestObserverSeesFaults(t *testing.T) {
	const password = "obs-s3cret-pw"
	servers := distlocktest.NewServers(t, 3, "--requirepass", password)
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = "redis://:" + password + "@" + s.Addr()
	}
	rec := &recorder{}
	c := newClient(t, addrs, append(rec.options(), distlock.WithMasterTimeout(200*time.Millisecond))...)
	rec.mu.Lock()
	rec.c = c
	rec.mu.Unlock()
	ctx := context.Background()
	name := lockName(t)

	lease, err := newMutex(t, c, name, distlock.WithTTL(3*time.Second)).Lock(ctx)
	require.NoError(t, err)
	rec.await(t, "acquire", func(ev distlock.Event) bool {
		return ev.Kind == distlock.EventAcquire && ev.Name == name && ev.Err == nil && ev.Agreed >= 2 && ev.Masters == 3
	})

	// Two of three masters stop answering: the renewal fails.
	for _, s := range servers[1:] {
		require.NoError(t, s.Pause())
	}
	resumed := false
	resume := func() {
		for _, s := range servers[1:] {
			assert.NoError(t, s.Resume())
		}
	}
	defer func() {
		if !resumed {
			resume()
		}
	}()
	failed := rec.await(t, "failed renewal", func(ev distlock.Event) bool {
		return ev.Kind == distlock.EventRenewal && ev.Name == name && ev.Err != nil
	})
	assert.Less(t, failed.Agreed, 2)
	for _, s := range servers[1:] {
		rec.await(t, "master down", func(ev distlock.Event) bool {
			return ev.Kind == distlock.EventMasterDown && ev.Master == s.Addr() && errors.Is(ev.Err, distlock.ErrMasterDown)
		})
	}
	rec.mu.Lock()
	for _, err := range rec.inspectErrs {
		assert.NoError(t, err, "Inspect called by the observer")
	}
	rec.mu.Unlock()
	resume()
	resumed = true
	for _, s := range servers[1:] {
		rec.await(t, "master up", func(ev distlock.Event) bool {
			return ev.Kind == distlock.EventMasterUp && ev.Master == s.Addr()
		})
	}
	rec.await(t, "renewal that recovered", func(ev distlock.Event) bool {
		return ev.Kind == distlock.EventRenewal && ev.Name == name && ev.Err == nil
	})
	require.NoError(t, lease.Err(), "recovered before the safety deadline")

	// Paused again, for longer than the validity: the lease is lost.
	for _, s := range servers[1:] {
		require.NoError(t, s.Pause())
	}
	resumed = false
	lost := rec.await(t, "lost", func(ev distlock.Event) bool { return ev.Kind == distlock.EventLost })
	assert.Equal(t, name, lost.Name)
	assert.ErrorIs(t, lost.Err, distlock.ErrLeaseLost)
	assert.Equal(t, lease.Err(), lost.Err)
	assert.Greater(t, lost.Duration, time.Second, "held for more than a renewal")
	resume()
	resumed = true

	require.NoError(t, c.Close()) // waits for the events to be delivered
	logs := rec.logs()
	for _, want := range []string{
		`"msg":"distlock: master suspected down"`, `"msg":"distlock: master answers again"`,
		`"msg":"distlock: lease renewal failing; retrying until the safety deadline"`,
		`"msg":"distlock: lease renewal recovered"`, `"msg":"distlock: lease lost"`,
		`"master":"` + servers[1].Addr() + `"`, `"lock":"` + name + `"`,
	} {
		assert.Contains(t, logs, want)
	}
	assert.Equal(t, 2, strings.Count(logs, "renewal failing"), "once per run of failures: %s", logs)
	assert.Equal(t, 1, strings.Count(logs, "renewal recovered"))
	assert.NotContains(t, logs, password)
	for _, ev := range rec.find(func(distlock.Event) bool { return true }) {
		assert.NotContains(t, ev.Master, password)
		if ev.Err != nil {
			assert.NotContains(t, ev.Err.Error(), password)
		}
		for _, d := range ev.Dissent {
			assert.NotContains(t, d.Error(), password)
		}
	}
}

// TestObserverSeesLockCalls: acquire rounds (won and refused), the wait, the
// retries, the release and Extend, each with the lock's name; a master that
// fails is in the round's Dissent.
func TestObserverSeesLockCalls(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	rec := &recorder{}
	holder := newClient(t, addrs)
	c := newClient(t, addrs, append(rec.options(), distlock.WithMasterTimeout(testTimeout))...)
	ctx := context.Background()
	name := lockName(t)

	held, err := newMutex(t, holder, name).Lock(ctx)
	require.NoError(t, err)
	got := lockAsync(ctx, newMutex(t, c, name))
	rec.await(t, "wait", func(ev distlock.Event) bool {
		return ev.Kind == distlock.EventWait && ev.Name == name && errors.Is(ev.Err, distlock.ErrLocked)
	})
	refused := rec.await(t, "refused acquire", func(ev distlock.Event) bool {
		return ev.Kind == distlock.EventAcquire && ev.Name == name && ev.Err != nil
	})
	assert.ErrorIs(t, refused.Err, distlock.ErrLocked)
	assert.NotEmpty(t, refused.Dissent, "the masters that said no")
	require.NoError(t, held.Unlock(ctx))
	require.NoError(t, recv(t, got, "the waiting Lock"))
	rec.await(t, "won acquire", func(ev distlock.Event) bool {
		return ev.Kind == distlock.EventAcquire && ev.Name == name && ev.Err == nil
	})
	rec.await(t, "release by lockAsync", func(ev distlock.Event) bool {
		return ev.Kind == distlock.EventRelease && ev.Name == name && ev.Err == nil && ev.Agreed >= 2
	})

	// A master down: it is in the Dissent of a round that still wins.
	require.NoError(t, servers[0].Kill())
	m := newMutex(t, c, lockName(t))
	withDissent := func(ev distlock.Event) bool {
		return ev.Kind == distlock.EventAcquire && ev.Name == m.Name() && ev.Err == nil && len(ev.Dissent) == 1
	}
	// The first rounds may win before the dead master's failure is known
	// (fast quorum); once it is suspected down it fails at once.
	var lease *distlock.Lease
	for deadline := time.Now().Add(waitTimeout); lease == nil && time.Now().Before(deadline); {
		l, err := m.TryLock(ctx)
		switch {
		case err != nil:
		case len(rec.find(withDissent)) > 0:
			lease = l
		default:
			require.NoError(t, l.Unlock(ctx))
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NotNil(t, lease, "no acquire round listed the dead master")
	dissent := rec.find(withDissent)[0].Dissent[0]
	assert.Equal(t, servers[0].Addr(), dissent.Addr)
	require.NoError(t, lease.Extend(ctx))
	ext := rec.await(t, "extend", func(ev distlock.Event) bool {
		return ev.Kind == distlock.EventExtend && ev.Name == m.Name()
	})
	assert.NoError(t, ext.Err)
	assert.Equal(t, 2, ext.Agreed)
	require.NoError(t, lease.Unlock(ctx))

	require.NoError(t, c.Close()) // waits for the events to be delivered
	logs := rec.logs()
	assert.Contains(t, logs, `"msg":"distlock: acquire round"`)
	assert.Contains(t, logs, `"msg":"distlock: waiting for release"`)
}

// TestObserverAllocs: an observer or a logger adds no allocation to an
// uncontended Lock+Unlock cycle, which stays at 6 or fewer (without the
// race detector, which adds its own).
func TestObserverAllocs(t *testing.T) {
	servers := distlocktest.NewServers(t, 3)
	addrs := distlocktest.Addrs(servers)
	ctx := context.Background()
	for _, n := range []int{1, 3} {
		var base float64
		for _, tc := range []struct {
			name string
			opts []distlock.ClientOption
		}{
			{"none", nil},
			{"observer", []distlock.ClientOption{distlock.WithObserver(func(distlock.Event) {})}},
			{"logger", []distlock.ClientOption{distlock.WithLogger(slog.New(slog.NewTextHandler(discard{}, nil)))}},
		} {
			c := newClient(t, addrs[:n], tc.opts...)
			m := newMutex(t, c, lockName(t))
			cycle := func() {
				lease, err := m.TryLock(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if err := lease.Unlock(ctx); err != nil {
					t.Error(err)
				}
			}
			cycle() // connect
			// The least of three measures: on a loaded machine a goroutine
			// that moves to another P misses the round it recycled there
			// (sync.Pool), which shows as noise, not as the observer's cost.
			allocs := testing.AllocsPerRun(300, cycle)
			for range 2 {
				allocs = min(allocs, testing.AllocsPerRun(300, cycle))
			}
			t.Logf("%s, %d masters: %.1f allocs per cycle", tc.name, n, allocs)
			if tc.name == "none" {
				base = allocs
			}
			// The race detector allocates on its own, and makes sync.Pool
			// drop recycled rounds at random: `make test` runs this test
			// without it too.
			if !raceEnabled {
				assert.LessOrEqual(t, allocs, base, "%s, %d masters: more than without", tc.name, n)
				assert.LessOrEqual(t, allocs, 6.0, "%s, %d masters", tc.name, n)
			}
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestEventKindString(t *testing.T) {
	names := map[distlock.EventKind]string{
		distlock.EventAcquire: "acquire", distlock.EventRetry: "retry", distlock.EventWait: "wait",
		distlock.EventRelease: "release", distlock.EventExtend: "extend", distlock.EventRenewal: "renewal",
		distlock.EventLost: "lost", distlock.EventMasterDown: "master-down", distlock.EventMasterUp: "master-up",
		distlock.EventMasterFenced: "master-fenced", distlock.EventMasterUnfenced: "master-unfenced",
		distlock.EventMasterWarning: "master-warning", 0: "unknown", 200: "unknown",
	}
	for k, want := range names {
		assert.Equal(t, want, k.String())
	}
	assert.False(t, strings.Contains(distlock.EventAcquire.String(), " "))
}

// TestLoggerPermanentFailure: a failure that retrying cannot fix is logged
// at Error, without the password.
func TestLoggerPermanentFailure(t *testing.T) {
	const password = "right-pw-123"
	servers := distlocktest.NewServers(t, 3, "--requirepass", password)
	rec := &recorder{}
	c := newClient(t, distlocktest.Addrs(servers), append(rec.options(), distlock.WithPassword("wrong-pw-456"))...)
	_, err := newMutex(t, c, lockName(t)).Lock(context.Background())
	require.ErrorIs(t, err, distlock.ErrPermanent)
	require.NoError(t, c.Close()) // waits for the events to be delivered
	logs := rec.logs()
	assert.Contains(t, logs, `"level":"ERROR","msg":"distlock: failure that retrying cannot fix"`)
	assert.Contains(t, logs, "WRONGPASS")
	assert.NotContains(t, logs, "wrong-pw-456")
	assert.NotContains(t, logs, password)
}
