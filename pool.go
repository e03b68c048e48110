package distlock

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/gomodule/redigo/redis"
)

// Pool is the one method distlock needs from a connection pool. A redigo
// *redis.Pool satisfies it. Connections are taken with the context, so a
// dial to a dead master is bounded.
type Pool interface {
	GetContext(ctx context.Context) (redis.Conn, error)
}

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
	masters  []*master
	quorum   int
	clock    clock.Clock
	owned    []*redis.Pool // pools built by NewClient, closed by Close
	idArg    any           // this Client's random id (a string), sent with its release announcements
	renewer  *renewer      // the watchdog of every lease
	notifier *notifier     // release announcements for waiting Lock calls

	closeOnce sync.Once
}

// NewClient returns a Client for the given masters. Each address is
// "host:port" or a URL "redis://[user:password@]host[:port][/db]", or
// "rediss://..." for TLS. No address means DefaultAddr. Construction
// validates every address and option and does not dial: connections are made
// on first use, so a master that is down at start-up does not stop the
// Client from being built.
//
// Two addresses for the same host and port are an error, whatever their
// database: one server must not count twice toward the quorum. (Different
// host names for the same server, such as "localhost" and "127.0.0.1", are
// not detected.)
func NewClient(addrs []string, opts ...ClientOption) (*Client, error) {
	cfg := defaultClientConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		addrs = []string{DefaultAddr}
	}
	seen := make(map[string]int, len(addrs))
	parsed := make([]masterAddr, len(addrs))
	for i, s := range addrs {
		a, err := parseAddr(s, &cfg)
		if err != nil {
			return nil, fmt.Errorf("distlock: masters[%d]: %w", i, err)
		}
		if j, dup := seen[a.server]; dup {
			return nil, fmt.Errorf("distlock: masters[%d]: duplicate master %s (same server as masters[%d]): one server must not count twice toward the quorum", i, a.server, j)
		}
		seen[a.server] = i
		parsed[i] = a
	}
	c := &Client{clock: cfg.clock, quorum: len(addrs)/2 + 1, idArg: newToken()}
	c.renewer, c.notifier = newRenewer(c), newNotifier(c)
	for _, a := range parsed {
		p := a.pool(&cfg)
		c.owned = append(c.owned, p)
		c.masters = append(c.masters, newMaster(a.display, p, &cfg))
	}
	return c, nil
}

// NewClientFromPools returns a Client over pools the caller already has, one
// per independent master. The caller keeps ownership: Close does not close
// them. The same pool given twice is an error. Options that shape the pools
// (password, TLS, pool size, dial timeout) do not apply; the master timeout
// and the clock do.
func NewClientFromPools(pools []Pool, opts ...ClientOption) (*Client, error) {
	cfg := defaultClientConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
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
	c := &Client{clock: cfg.clock, quorum: len(pools)/2 + 1, idArg: newToken()}
	c.renewer, c.notifier = newRenewer(c), newNotifier(c)
	for i, p := range pools {
		c.masters = append(c.masters, newMaster(fmt.Sprintf("pool[%d]", i), p, &cfg))
	}
	return c, nil
}

// Masters returns the number of masters.
func (c *Client) Masters() int { return len(c.masters) }

// Quorum returns the number of masters that must agree: Masters()/2 + 1.
func (c *Client) Quorum() int { return c.quorum }

// Close stops the Client's goroutines, waits for them to exit and closes the
// pools it built. Leases still held are lost at once (Done closes, Err
// matches ErrLeaseLost and ErrClosed) and their keys expire with their TTL:
// Unlock them before Close. Commands already queued are sent and answered
// first (each bounded by the master timeout); later calls on the Client or
// its mutexes fail with ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		// Leases first: their watchdog stops and they are lost (ErrClosed),
		// so no extension is queued behind the masters' shutdown.
		c.renewer.close()
		c.notifier.close()
		var wg sync.WaitGroup
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
	})
	return nil
}

// masterAddr is one parsed master address.
type masterAddr struct {
	display string // host:port, plus /db when not 0; never a secret
	server  string // lower-case host:port, for duplicate detection
	opts    []redis.DialOption
}

func (a masterAddr) pool(cfg *clientConfig) *redis.Pool {
	opts := append([]redis.DialOption{
		redis.DialConnectTimeout(cfg.dialTimeout),
		redis.DialReadTimeout(cfg.masterTimeout),
		redis.DialWriteTimeout(cfg.masterTimeout),
	}, a.opts...)
	server := a.server
	return &redis.Pool{
		MaxIdle:     cfg.poolSize,
		MaxActive:   cfg.poolSize,
		Wait:        true,
		IdleTimeout: 5 * time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", server, opts...)
		},
	}
}

// parseAddr parses "host:port" or a redis:// or rediss:// URL. Errors never
// contain the password.
func parseAddr(s string, cfg *clientConfig) (masterAddr, error) {
	var (
		a          masterAddr
		host, port string
		user, pass = cfg.username, cfg.password
		db         int
		useTLS     = cfg.tls != nil
	)
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return a, fmt.Errorf("invalid address: not a valid URL")
		}
		// Never u.Redacted(): redis-cli style URLs carry the password in the
		// user name, which Redacted keeps.
		shown := u.Scheme + "://" + u.Host + u.Path
		switch u.Scheme {
		case "redis":
		case "rediss":
			useTLS = true
		default:
			return a, fmt.Errorf("invalid address %q: scheme must be redis or rediss", shown)
		}
		if u.Opaque != "" || u.RawQuery != "" || u.Fragment != "" {
			return a, fmt.Errorf("invalid address %q: only [user:password@]host[:port][/db] is accepted", shown)
		}
		host, port = u.Hostname(), u.Port()
		if port == "" {
			port = "6379"
		}
		if u.User != nil {
			if p, ok := u.User.Password(); ok {
				pass = p
				if n := u.User.Username(); n != "" {
					user = n
				}
			} else {
				pass = u.User.Username() // redis-cli style: a lone user-info is the password
			}
		}
		if path := strings.TrimPrefix(u.Path, "/"); path != "" {
			n, err := strconv.Atoi(path)
			if err != nil || n < 0 {
				return a, fmt.Errorf("invalid address %q: database %q is not a non-negative number", shown, path)
			}
			db = n
		}
		s = shown
	} else {
		var err error
		host, port, err = net.SplitHostPort(s)
		if err != nil {
			return a, fmt.Errorf("invalid address %q: want host:port or a redis:// URL", s)
		}
	}
	if host == "" {
		return a, fmt.Errorf("invalid address %q: host is empty", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return a, fmt.Errorf("invalid address %q: port %q is not in 1-65535", s, port)
	}
	a.server = net.JoinHostPort(strings.ToLower(host), port)
	a.display = a.server
	if db != 0 {
		a.display += "/" + strconv.Itoa(db)
		a.opts = append(a.opts, redis.DialDatabase(db))
	}
	if user != "" {
		a.opts = append(a.opts, redis.DialUsername(user))
	}
	if pass != "" {
		a.opts = append(a.opts, redis.DialPassword(pass))
	}
	if useTLS {
		a.opts = append(a.opts, redis.DialUseTLS(true))
		if cfg.tls != nil {
			a.opts = append(a.opts, redis.DialTLSConfig(cfg.tls))
		}
	}
	return a, nil
}
