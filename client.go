package distlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/gomodule/redigo/redis"
)

// Client is the shared entry point to N independent Redis masters (no
// replication between them). It keeps one pool per master, built once, and
// every Mutex made from it shares them: create one Client per process and
// set of masters, and Close it when done.
//
// Each master's lock traffic is pipelined on one long-lived connection: a
// writer goroutine sends whatever is queued and flushes once, a reader
// goroutine hands replies back in order. So a release queued behind its own
// acquire always runs after it on the server. A master that does not answer
// within the master timeout is suspected down: requests to it fail at once
// (counted as "no" votes) and a probe re-admits it when it answers again.
//
// A Client is safe for concurrent use.
type Client struct {
	masters []*master
	quorum  int
	clock   clock.Clock
	wall    wallClock // the clock's wall readings, when it gives them (tests); nil for the real clock
	// watchSuspend: the clock can tell a suspend (the real clock, whose
	// times carry monotonic readings, or one that gives wall readings; not a
	// mock), so leases and the watchdog check for one.
	watchSuspend bool
	timeout      time.Duration // the master timeout
	owned        []*redis.Pool // pools built by NewClient, closed by Close
	idArg        any           // this Client's random id (a string), sent with its release announcements
	renewer      *renewer      // the watchdog of every lease
	notifier     *notifier     // release announcements for waiting Lock calls
	obs          *observer     // events for WithObserver and WithLogger
	policy       *fencePolicy  // the restart fence and master checks
	waiting      atomic.Int64  // Lock calls waiting for a busy lock
	rounds       *sync.Pool    // recycled rounds (see round)

	closed    atomic.Bool
	done      chan struct{} // closed when Close begins
	active    atomic.Int64  // rounds, acquisitions and releases in flight
	closeOnce sync.Once
}

// NewClient returns a Client for the given masters, any number of them. Each
// address is "host:port", a URL "redis://[user:password@]host[:port][/db]"
// or "rediss://..." for TLS, or "unix:///path/to/redis.sock"; spaces around
// an address are ignored. No address means DefaultAddr. Construction
// validates every address and option and does not dial: connections are made
// on first use, so a master that is down at start-up does not stop the
// Client from being built.
//
// A master may be a Redis Cluster: give one of its nodes, or several
// separated by commas ("10.0.0.1:7000,10.0.0.2:7000"), and each name's
// traffic goes to the node that owns its slot (see the README's "Redis
// Cluster"). An address with user-info ("redis://user:pass@...") is never
// split, since a password may hold a comma: give one node (the others are
// found), or the password with WithPassword. The other nodes are dialled as
// the first one is (TLS, credentials), at the addresses the cluster gives.
//
// Two addresses for the same server are an error, whatever their database:
// one server must not count twice toward the quorum. Addresses are compared
// as servers: host names without regard to case, IP addresses and ports as
// numbers ("127.0.0.1:06379" is "127.0.0.1:6379"). Different names for one
// server, such as "localhost" and "127.0.0.1", are not detected, nor are
// two nodes of one cluster given as two masters until both route: then an
// EventMasterWarning names them.
func NewClient(addrs []string, opts ...ClientOption) (*Client, error) {
	cfg, err := newClientConfig(opts)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		addrs = []string{DefaultAddr}
	}
	seen := make(map[string]int, len(addrs))
	parsed := make([][]masterAddr, len(addrs))
	for i, s := range addrs {
		for _, s := range seedList(s) {
			a, err := parseAddr(s, cfg)
			if err != nil {
				return nil, fmt.Errorf("distlock: masters[%d]: %w", i, err)
			}
			if j, dup := seen[a.server]; dup {
				return nil, fmt.Errorf("distlock: masters[%d]: duplicate master %s (same server as masters[%d]): one server must not count twice toward the quorum", i, a.server, j)
			}
			seen[a.server] = i
			parsed[i] = append(parsed[i], a)
		}
	}
	c := newClient(cfg, len(addrs))
	for _, seeds := range parsed {
		a := seeds[0]
		p := newPool(a, cfg)
		c.owned = append(c.owned, p)
		m := makeMaster(a.display, p, cfg, c.obs, c.policy)
		// The master may be a Redis Cluster: its other nodes are dialled
		// as the seed is (TLS, credentials), at the addresses it gives.
		var others []string
		for _, b := range seeds[1:] {
			others = append(others, b.address)
		}
		newRoute(m, a.address, func(addr string) *redis.Pool {
			b := a
			b.network, b.address = "tcp", addr
			return newPool(b, cfg)
		}, others)
		m.start()
		c.masters = append(c.masters, m)
	}
	return c, nil
}

// seedList splits a master's address into the seed nodes of a Redis
// Cluster, separated by commas. An address with user-info is one address:
// a password may hold a comma.
func seedList(s string) []string {
	if strings.Contains(s, "@") || !strings.Contains(s, ",") {
		return []string{s}
	}
	return strings.Split(s, ",")
}

// NewClientFromPools returns a Client over pools the caller already has, one
// per independent master. The caller keeps ownership: Close does not close
// them. The same pool given twice is an error. Options that shape the pools
// (password, TLS, dial timeout) do not apply; the master timeout and the
// clock do. A Client holds up to three connections of each pool at a time
// (lock traffic, the subscriber connection shared by waiters and observers,
// a health probe): a pool capped below that, with Wait set, delays them.
func NewClientFromPools(pools []Pool, opts ...ClientOption) (*Client, error) {
	cfg, err := newClientConfig(opts)
	if err != nil {
		return nil, err
	}
	if len(pools) == 0 {
		return nil, fmt.Errorf("distlock: pools: at least one pool is needed")
	}
	for i, p := range pools {
		if p == nil {
			return nil, fmt.Errorf("distlock: pools[%d]: pool is nil", i)
		}
		for j := range i {
			if pools[j] == p {
				return nil, fmt.Errorf("distlock: pools[%d]: duplicate pool (same as pools[%d]): one server must not count twice toward the quorum", i, j)
			}
		}
	}
	// Only now start the masters' goroutines: an error above leaves none.
	c := newClient(cfg, len(pools))
	for i, p := range pools {
		c.masters = append(c.masters, newMaster(fmt.Sprintf("pool[%d]", i), p, cfg, c.obs, c.policy))
	}
	return c, nil
}

// clusterMasters reports which masters are Redis Cluster nodes, or nil when
// none is.
func (c *Client) clusterMasters() []bool {
	var out []bool
	for i, m := range c.masters {
		if m.cluster.Load() {
			if out == nil {
				out = make([]bool, len(c.masters))
			}
			out[i] = true
		}
	}
	return out
}

func newClient(cfg *clientConfig, n int) *Client {
	c := &Client{clock: cfg.clock, timeout: cfg.masterTimeout, quorum: n/2 + 1, idArg: newToken(), done: make(chan struct{}), obs: newObserver(cfg), rounds: newRoundPool(n)}
	c.wall, _ = cfg.clock.(wallClock)
	_, settable := cfg.clock.(interface{ Set(time.Time) }) // a mock, whose times carry no monotonic reading
	c.watchSuspend = c.wall != nil || !settable
	c.policy = &fencePolicy{off: cfg.fenceOff, strict: cfg.strictMasters, least: cfg.restartFence, clock: cfg.clock}
	c.renewer, c.notifier = newRenewer(c), newNotifier(c)
	c.obs.start()
	return c
}

// Close ends every lease the Client still holds and releases it on the
// masters, so other processes need not wait for the keys to expire: the
// leases' Done channels close and their Err matches ErrLeaseLost and
// ErrClosed. The releases' answers are awaited for at most the master
// timeout (WithMasterTimeout), and so are the rounds already in flight when
// Close began (a Lock that wins then releases what it took and returns
// ErrClosed). A master that is suspected down gets one more try (a dial and
// a master timeout, for every such master at once) to receive the releases
// kept for it. Then Close stops the Client's goroutines, waits for them (not
// for WithOnLost callbacks, which may call Close themselves), and closes the
// pools it built. A Lock (of any kind: RLock, Acquire, ...) that is waiting
// between attempts when Close begins returns at once (one in the middle of
// a round, when the round ends, within the master timeout), with an error matching ErrNotAcquired
// and ErrClosed, after undoing what it set (a waiting writer's bar). Later
// calls on the
// Client, its mutexes and its leases return errors matching ErrClosed
// (Unlock and Extend of an ended lease: ErrNotHeld). Close is idempotent and
// returns nil.
//
// A process that dies without Close leaves its keys on the masters until
// their TTL runs out.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		close(c.done)
		// Leases first: their watchdog stops and they end (ErrClosed), so
		// no extension is queued behind the releases.
		held := c.renewer.close()
		c.notifier.close()
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		var wg sync.WaitGroup
		for _, l := range held {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = l.Unlock(ctx) // ErrNotHeld: Close ended it; the release still goes out
			}()
		}
		wg.Wait()
		cancel()
		// Rounds that were in flight when Close began (a Lock about to
		// return, an Unlock) finish on open masters: a Lock that wins now
		// releases what it took and returns ErrClosed.
		deadline := time.Now().Add(c.timeout)
		for c.active.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		for _, m := range c.masters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.close()
			}()
		}
		wg.Wait()
		for _, p := range c.owned {
			_ = p.Close()
		}
		c.obs.stop(c.timeout)
	})
	return nil
}

// Do locks name (waiting as Lock does), runs fn, and unlocks. fn's context
// is cancelled when ctx ends or when the lease is lost; Do then returns fn's
// error joined with the lease's error (matching ErrLeaseLost). If the lock is
// not acquired, fn does not run and Do returns Lock's error; invalid options
// and a closed Client are reported the same way, matching ErrNotAcquired too.
// The unlock runs even if ctx has ended; its error, if any, is joined to
// fn's. If fn panics, Do unlocks and then panics again with the same value.
func (c *Client) Do(ctx context.Context, name string, fn func(ctx context.Context) error, opts ...Option) error {
	m, err := c.NewMutex(name, opts...)
	if err != nil {
		return notAcquired(err, nil)
	}
	fnErr, endErr := m.withLease(ctx, func(ctx context.Context, _ *Lease) error { return fn(ctx) })
	return errors.Join(fnErr, endErr)
}

// withLease locks m, runs fn under the lease, and unlocks (see Do). It
// returns Lock's or fn's error, and apart from it how the lease ended: its
// loss, or else Unlock's error. If fn panics, the lock is released before
// the panic goes on, unchanged: a caller that recovers (as net/http does for
// a handler) leaves no lease behind for the watchdog to renew forever.
func (m *Mutex) withLease(ctx context.Context, fn func(ctx context.Context, lease *Lease) error) (fnErr, endErr error) {
	return withLease(ctx, m.Lock, fn)
}

// held is what withLease needs of a lease: a *Lease or a *MultiLease.
type held interface {
	Context() context.Context
	Err() error
	Unlock(ctx context.Context) error
}

// withLease takes a lease with lock and runs fn under it, as Mutex.withLease
// does.
func withLease[L held](ctx context.Context, lock func(context.Context) (L, error), fn func(ctx context.Context, lease L) error) (fnErr, endErr error) {
	lease, err := lock(ctx)
	if err != nil {
		return err, nil
	}
	fnCtx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(lease.Context(), func() { cancel(context.Cause(lease.Context())) })
	defer func() { // deferred, so that it runs when fn panics too
		stop()
		cancel(nil)
		unlockErr := lease.Unlock(context.WithoutCancel(ctx))
		if lost := lease.Err(); lost != nil {
			endErr = lost // the loss is the news; Unlock cleaned what was left
			return
		}
		endErr = unlockErr
	}()
	return fn(fnCtx, lease), nil
}
