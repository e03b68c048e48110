package distlock_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// masters are three redis-servers started by TestMain for the Example
// functions, which cannot start their own.
var masters []string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	started := time.Now()
	var servers []*distlocktest.Server
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	for range 3 {
		s, err := distlocktest.StartServer()
		if errors.Is(err, distlocktest.ErrNoRedis) && distlocktest.SkipWithoutRedis() {
			fmt.Fprintln(os.Stderr, "SKIP (DISTLOCK_SKIP_REDIS is set): distlock's tests need redis-server:", err)
			return 0
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		servers = append(servers, s)
		masters = append(masters, s.Addr())
	}
	// The examples use these masters with the default restart fence, which
	// fences a master that started less than DefaultTTL (plus drift) ago.
	flag.Parse()
	if run := flag.Lookup("test.run").Value.String(); run == "" || strings.Contains(run, "Example") {
		time.Sleep(time.Until(started.Add(distlock.DefaultTTL + time.Second)))
	}
	code := m.Run()
	for _, s := range servers {
		s.Close()
	}
	servers = nil
	if code == 0 {
		// Every goroutine the library starts must be stopped by the API that
		// started it (Client.Close, Unlock).
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			return 1
		}
	}
	return code
}

// testTimeout is the master timeout used by tests that inject faults: short
// enough to keep them quick, long compared with a loopback round trip.
const testTimeout = time.Second

// newClient returns a Client over addrs, closed at the end of the test. Its
// restart fence is off (the servers tests start are seconds old, so it would
// fence them at first contact), unless opts turn it on (WithRestartFence):
// the fence's own tests do.
func newClient(t testing.TB, addrs []string, opts ...distlock.ClientOption) *distlock.Client {
	t.Helper()
	c, err := distlock.NewClient(addrs, append([]distlock.ClientOption{distlock.WithoutRestartFence()}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// newUnfencedClient is distlock.NewClient with the restart fence off (see
// newClient), for tests that close the Client themselves.
func newUnfencedClient(addrs []string, opts ...distlock.ClientOption) (*distlock.Client, error) {
	return distlock.NewClient(addrs, append([]distlock.ClientOption{distlock.WithoutRestartFence()}, opts...)...)
}

// cluster starts n masters and a Client over them.
func cluster(t testing.TB, n int, opts ...distlock.ClientOption) ([]*distlocktest.Server, *distlock.Client) {
	t.Helper()
	servers := distlocktest.NewServers(t, n)
	return servers, newClient(t, distlocktest.Addrs(servers), opts...)
}

// proxied starts n masters, a proxy in front of each, and a Client that
// talks to the proxies.
func proxied(t testing.TB, n int, opts ...distlock.ClientOption) ([]*distlocktest.Server, []*distlocktest.Proxy, *distlock.Client) {
	t.Helper()
	servers := distlocktest.NewServers(t, n)
	proxies := make([]*distlocktest.Proxy, n)
	addrs := make([]string, n)
	for i, s := range servers {
		proxies[i] = distlocktest.NewProxy(t, s.Addr())
		addrs[i] = proxies[i].Addr()
	}
	return servers, proxies, newClient(t, addrs, opts...)
}

// inParallel runs work(0) ... work(n-1) in n goroutines, waits for all of
// them, and fails t with every error they returned (never calling t.Fatal
// from a spawned goroutine).
func inParallel(t testing.TB, n int, work func(i int) error) {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = work(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

var nameSeq atomic.Int64

// lockName returns a lock name unique to this test run.
func lockName(t testing.TB) string {
	return fmt.Sprintf("distlock-test:%s:%d", t.Name(), nameSeq.Add(1))
}

func newMutex(t testing.TB, c *distlock.Client, name string, opts ...distlock.Option) *distlock.Mutex {
	t.Helper()
	m, err := c.NewMutex(name, opts...)
	require.NoError(t, err)
	return m
}

// holders returns how many servers hold a key called name.
func holders(t testing.TB, servers []*distlocktest.Server, name string) int {
	t.Helper()
	n := 0
	for _, s := range servers {
		v, err := s.Do("EXISTS", name)
		require.NoError(t, err)
		n += int(v.(int64))
	}
	return n
}

// eventuallyHolders waits until want servers hold name. Fast quorum returns
// before the slowest master answers, so its command may still be in flight
// when a call returns. The 2s window is far below every TTL these checks
// use (10s and more), so a key that was not released cannot pass by expiring.
func eventuallyHolders(t testing.TB, servers []*distlocktest.Server, name string, want int, msg string) {
	t.Helper()
	require.Eventually(t, func() bool { return holders(t, servers, name) == want }, 2*time.Second, 2*time.Millisecond, msg)
}

// dbsize returns the number of keys on s.
func dbsize(t testing.TB, s *distlocktest.Server) int64 {
	t.Helper()
	v, err := s.Do("DBSIZE")
	require.NoError(t, err)
	return v.(int64)
}

// lockAsync runs m.Lock(ctx) in a goroutine and, if it succeeds, Unlock;
// the channel receives the first error, or nil.
func lockAsync(ctx context.Context, m *distlock.Mutex) <-chan error {
	got := make(chan error, 1)
	go func() {
		lease, err := m.Lock(ctx)
		if err == nil {
			err = lease.Unlock(ctx)
		}
		got <- err
	}()
	return got
}

// runLeader runs e.Run(ctx, value, ...) in a goroutine with a lead that
// waits for its context: leading is closed when lead starts, ran receives
// Run's result.
func runLeader[T any](ctx context.Context, e *distlock.Election[T], value T) (leading <-chan struct{}, ran <-chan error) {
	l, r := make(chan struct{}), make(chan error, 1)
	go func() {
		r <- e.Run(ctx, value, func(ctx context.Context) error {
			close(l)
			<-ctx.Done()
			return nil
		})
	}()
	return l, r
}

// waitTimeout bounds every wait on a channel in the tests: far above any
// handoff the tests expect, so it only ends a test that would hang.
const waitTimeout = 20 * time.Second

// recv returns what ch delivers, failing t if nothing comes within
// waitTimeout.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("%s: nothing after %v", what, waitTimeout)
		panic("unreachable")
	}
}

// silent fails t if ch delivers within d.
func silent[T any](t testing.TB, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s: got %v", what, v)
	case <-time.After(d):
	}
}
