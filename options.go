package distlock

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/cenkalti/backoff/v4"
)

// Defaults used when an option is not given.
const (
	// DefaultAddr is the master used by NewClient when no address is given
	// (the default of the Python DistLock library).
	DefaultAddr = "127.0.0.1:6379"
	// DefaultTTL is the time to live of a lock key.
	DefaultTTL = 10 * time.Second
	// DefaultDriftFactor and DefaultDriftConstant give the clock drift that is
	// subtracted from every validity: ttl*DefaultDriftFactor + DefaultDriftConstant.
	DefaultDriftFactor   = 0.01
	DefaultDriftConstant = 2 * time.Millisecond
	// DefaultMasterTimeout bounds one master's answer. A master that stays
	// silent this long is suspected down and routed around until it answers.
	DefaultMasterTimeout = 500 * time.Millisecond
	// DefaultDialTimeout bounds connecting to a master.
	DefaultDialTimeout = 2 * time.Second
	// DefaultRetryInitial and DefaultRetryMax shape Lock's default retry
	// policy: exponential backoff with ±50% jitter, doubling from
	// DefaultRetryInitial up to DefaultRetryMax, until the context ends.
	DefaultRetryInitial = 10 * time.Millisecond
	DefaultRetryMax     = 250 * time.Millisecond
)

// ClientOption configures a Client. Invalid values are reported by NewClient
// and NewClientFromPools, naming the option.
type ClientOption func(*clientConfig)

type clientConfig struct {
	username      string
	password      string
	tls           *tls.Config
	dialTimeout   time.Duration
	masterTimeout time.Duration
	clock         clock.Clock
	observer      func(Event)
	logger        *slog.Logger
	restartFence  time.Duration
	fenceOff      bool
	strictMasters bool
}

// newClientConfig applies opts to the defaults and validates the result.
func newClientConfig(opts []ClientOption) (*clientConfig, error) {
	c := &clientConfig{
		dialTimeout:   DefaultDialTimeout,
		masterTimeout: DefaultMasterTimeout,
		clock:         clock.New(),
		restartFence:  DefaultTTL + time.Duration(float64(DefaultTTL)*DefaultDriftFactor) + DefaultDriftConstant,
	}
	for _, o := range opts {
		o(c)
	}
	switch {
	case c.dialTimeout <= 0:
		return nil, fmt.Errorf("distlock: WithDialTimeout: must be positive, got %v", c.dialTimeout)
	case c.masterTimeout <= 0:
		return nil, fmt.Errorf("distlock: WithMasterTimeout: must be positive, got %v", c.masterTimeout)
	case c.clock == nil:
		return nil, fmt.Errorf("distlock: WithClock: clock is nil")
	case c.restartFence < 0:
		return nil, fmt.Errorf("distlock: WithRestartFence: must not be negative, got %v", c.restartFence)
	}
	return c, nil
}

// WithPassword sets the password (Redis AUTH) for every master whose address
// does not carry one. It never appears in errors. Default: none.
func WithPassword(password string) ClientOption {
	return func(c *clientConfig) { c.password = password }
}

// WithUsername sets the ACL user for every master whose address does not
// carry one. Default: none (the default user).
func WithUsername(username string) ClientOption {
	return func(c *clientConfig) { c.username = username }
}

// WithTLS sets the TLS configuration used for rediss:// addresses, and turns
// TLS on for plain host:port addresses. Default: TLS only for rediss://, with
// the system roots.
func WithTLS(config *tls.Config) ClientOption {
	return func(c *clientConfig) { c.tls = config }
}

// WithDialTimeout bounds connecting to a master. Default: DefaultDialTimeout.
// Zero or negative is an error.
func WithDialTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.dialTimeout = d }
}

// WithMasterTimeout bounds the wait for one master's answer; it is the read
// and write timeout of every connection. Keep it well below your lock TTLs.
// Default: DefaultMasterTimeout. Zero or negative is an error.
func WithMasterTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.masterTimeout = d }
}

// WithClock sets the clock that measures validity and drives every lock timer
// (retry waits, renewals). Tests pass clock.NewMock(). Socket deadlines and
// health probes stay on real time, because the network runs on real time.
// A clock that also has a method Wall(t time.Time) time.Time, giving the
// wall-clock reading of each of its times, lets a test simulate a suspended
// host: its wall clock runs ahead of its monotonic clock (see Lease.Until).
// Default: clock.New(), the real clock.
func WithClock(clk clock.Clock) ClientOption {
	return func(c *clientConfig) { c.clock = clk }
}

// WithRestartFence sets the least time a master stays fenced after it
// restarted or was promoted: give the longest TTL (plus its drift) that any
// process uses for locks on these masters, when it is longer than this
// Client's own. The Client learns each master's identity (run id,
// replication id) and uptime with INFO on every new connection, and on the
// open connection before the first request after an idle second or after a
// reply that says the server is not a writable master (READONLY,
// MASTERDOWN, LOADING). A master whose identity changed since the last
// check (a restart, a replica promoted in its place, a master demoted and
// promoted again) is fenced for the fence length from then, and one that
// started less than the fence length before the first connection, for what
// is left of it: meanwhile it does not count toward any quorum (acquire,
// extend, fencing, the typed layers' writes); requests to it fail with an
// error matching ErrMasterFenced, and releases are still sent. This is the
// "delayed restart" of Redlock's analysis, kept by the client: a master that
// lost its keys cannot grant a lock that a holder still holds on other
// masters. The fence length is the longest of d and the TTL plus drift of
// every lock this Client has made. A replica never counts (its writes fail
// anyway); it is checked again every 5 s. Limits: a replica promoted before
// the Client's first connection to it; a change between two requests less
// than a second apart, before a failed reply between them was read; a
// master demoted, synced and promoted again between two checks, whose
// backlog was then freed (no replica for repl-backlog-ttl); a restart that
// changes neither the run id nor the uptime (a snapshot of the server's
// memory restored in place); and a master whose INFO is refused (ACL,
// renamed command, a proxy without it), which is reported (see
// WithStrictMasters) but cannot be fenced. Default: DefaultTTL plus its default drift.
// Negative is an error. It turns the fence on again after
// WithoutRestartFence.
func WithRestartFence(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.restartFence, c.fenceOff = d, false }
}

// WithoutRestartFence turns the restart fence (WithRestartFence) off. Do it
// only when a master cannot lose an acknowledged write: every master runs
// with appendonly yes and appendfsync always (check with CONFIG GET
// appendonly appendfsync, and INFO persistence: aof_enabled:1), and none has
// replicas that can be promoted. The master checks (WithStrictMasters) still
// run.
func WithoutRestartFence() ClientOption {
	return func(c *clientConfig) { c.fenceOff = true }
}

// WithStrictMasters refuses masters that fail a check instead of reporting
// them. On every new connection the Client checks, with INFO, that the master
// is not a replica, has no replicas (replication is asynchronous: a failover
// to one can lose lock keys), and has no maxmemory-policy that can evict lock
// keys (any policy but noeviction, when maxmemory is set: lock keys carry a
// TTL, so every volatile-* policy can pick them). A master whose INFO is
// refused (renamed, or forbidden by ACL) cannot be checked and fails too.
// By default a master that fails a check counts (but a replica, which
// never does), and each failure is reported on every new connection and
// when it changes, as an EventMasterWarning (logged at Warn). With
// WithStrictMasters it is fenced instead (requests fail with an error
// matching ErrMasterFenced, naming the check) until a check passes: it is
// checked again before the first request once 5 s have passed. CONFIG is
// not used: it is often renamed or forbidden, and INFO gives what the checks
// need.
func WithStrictMasters() ClientOption {
	return func(c *clientConfig) { c.strictMasters = true }
}

// Option configures a Mutex (NewMutex) or one call of Client.Do. Invalid
// values are reported by NewMutex and Do, naming the option.
type Option func(*lockConfig)

type lockConfig struct {
	ttl           time.Duration
	driftFactor   float64
	driftConstant time.Duration
	newBackOff    func() backoff.BackOff

	noRenewal     bool
	renewInterval time.Duration // 0: ttl / 3
	margin        time.Duration // used when marginSet; otherwise the drift
	marginSet     bool
	driftSet      bool
	maxHold       time.Duration // 0: no limit
	minHold       time.Duration // 0: none
	onLost        func(error)
}

func defaultLockConfig() lockConfig {
	return lockConfig{
		ttl:           DefaultTTL,
		driftFactor:   DefaultDriftFactor,
		driftConstant: DefaultDriftConstant,
	}
}

// interval is the time between the start of one renewal and the next.
func (c *lockConfig) interval() time.Duration {
	if c.renewInterval > 0 {
		return c.renewInterval
	}
	return c.ttl / 3
}

// safetyMargin is how long before Until a lease that could not be extended
// is declared lost.
func (c *lockConfig) safetyMargin() time.Duration {
	if c.marginSet {
		return c.margin
	}
	return c.drift()
}

// drift is the clock drift allowance subtracted from every validity.
func (c *lockConfig) drift() time.Duration {
	return time.Duration(float64(c.ttl)*c.driftFactor) + c.driftConstant
}

// validate reports the first invalid option, naming the option the user
// gave (a limit that only the defaults break is reported on WithTTL).
func (c *lockConfig) validate() error {
	validity := c.ttl - c.drift()
	switch {
	case c.ttl < time.Millisecond:
		return fmt.Errorf("distlock: WithTTL: must be at least 1ms, got %v", c.ttl)
	case !(c.driftFactor >= 0 && c.driftFactor < 1): // NaN fails both
		return fmt.Errorf("distlock: WithDrift: factor must be a number in [0, 1), got %v", c.driftFactor)
	case c.driftConstant < 0:
		return fmt.Errorf("distlock: WithDrift: constant must not be negative, got %v", c.driftConstant)
	case validity <= 0 && c.driftSet:
		return fmt.Errorf("distlock: WithDrift: the drift %v (ttl*factor + constant) must be smaller than the TTL %v", c.drift(), c.ttl)
	case validity <= 0:
		return fmt.Errorf("distlock: WithTTL: TTL %v must be larger than the drift %v (ttl*%v + %v, see WithDrift)", c.ttl, c.drift(), c.driftFactor, c.driftConstant)
	case c.marginSet && c.margin < 0:
		return fmt.Errorf("distlock: WithRenewalMargin: must not be negative, got %v", c.margin)
	case c.marginSet && c.margin >= validity:
		return fmt.Errorf("distlock: WithRenewalMargin: margin %v leaves no validity (ttl %v - drift %v)", c.margin, c.ttl, c.drift())
	case c.safetyMargin() >= validity:
		return fmt.Errorf("distlock: WithTTL: TTL %v leaves %v of validity after the drift, not more than the renewal margin %v (the drift, see WithRenewalMargin)", c.ttl, validity, c.safetyMargin())
	case c.renewInterval < 0:
		return fmt.Errorf("distlock: WithRenewalInterval: must be positive, got %v", c.renewInterval)
	case !c.noRenewal && c.interval() >= validity-c.safetyMargin() && c.renewInterval > 0:
		return fmt.Errorf("distlock: WithRenewalInterval: %v must be shorter than the validity left for renewing (ttl %v - drift %v - margin %v)",
			c.interval(), c.ttl, c.drift(), c.safetyMargin())
	case !c.noRenewal && c.interval() >= validity-c.safetyMargin():
		return fmt.Errorf("distlock: WithTTL: TTL %v is too short to renew every ttl/3 within ttl - drift %v - margin %v; use a longer TTL, WithRenewalInterval or WithoutRenewal",
			c.ttl, c.drift(), c.safetyMargin())
	case c.maxHold < 0:
		return fmt.Errorf("distlock: WithMaxHold: must not be negative, got %v", c.maxHold)
	case c.minHold < 0:
		return fmt.Errorf("distlock: WithMinHold: must not be negative, got %v", c.minHold)
	}
	return nil
}

// WithTTL sets the time to live of the lock's keys: how long the lock stays
// held by a holder that dies without unlocking. Default: DefaultTTL. It must
// be at least 1ms and larger than the drift (see WithDrift).
func WithTTL(ttl time.Duration) Option {
	return func(c *lockConfig) { c.ttl = ttl }
}

// WithDrift sets the clock drift allowance subtracted from every validity:
// drift = ttl*factor + constant. Default: DefaultDriftFactor and
// DefaultDriftConstant (1% + 2ms). factor must be a number in [0, 1) (not
// NaN), constant must not be negative, and the drift must be smaller than
// the TTL.
func WithDrift(factor float64, constant time.Duration) Option {
	return func(c *lockConfig) { c.driftFactor, c.driftConstant, c.driftSet = factor, constant, true }
}

// WithRetry sets the retry policy of Lock. newBackOff is called once per Lock
// call, so a policy's state is never shared between calls; it may return a
// policy that ends with backoff.Stop. Lock waits never outlast the context
// given to Lock, and never sleep past the moment the holder's keys expire.
// Default: exponential backoff from DefaultRetryInitial to DefaultRetryMax
// with jitter, until the context ends. A nil function restores the default.
func WithRetry(newBackOff func() backoff.BackOff) Option {
	return func(c *lockConfig) { c.newBackOff = newBackOff }
}

// WithoutRenewal turns the watchdog's extensions off: the lease lasts one
// validity unless the caller extends it with Lease.Extend. It is still
// declared lost, with Done closed, at Until minus the safety margin if it was
// not extended by then. Default: renewal on.
func WithoutRenewal() Option {
	return func(c *lockConfig) { c.noRenewal = true }
}

// WithRenewalInterval sets how often the watchdog extends a held lease, from
// the start of one extension to the next. Default: ttl/3. It must be positive
// and shorter than ttl - drift - margin.
func WithRenewalInterval(d time.Duration) Option {
	return func(c *lockConfig) { c.renewInterval = d }
}

// WithRenewalMargin sets the safety margin: a lease that could not be
// extended on a quorum is declared lost at Until minus this margin, before
// any other client could acquire the lock. Default: the drift (see
// WithDrift). Zero is allowed; negative is an error, and so is a margin
// that leaves no validity (ttl - drift).
func WithRenewalMargin(d time.Duration) Option {
	return func(c *lockConfig) { c.margin, c.marginSet = d, true }
}

// WithMaxHold bounds how long a lease may be kept alive from its
// acquisition: once reached, the watchdog stops extending and the lease is
// lost with an error matching both ErrLeaseLost and ErrMaxHold. The keys then
// expire within one TTL, so a stuck holder cannot keep the lock forever.
// Default: 0, no limit. Negative is an error.
func WithMaxHold(d time.Duration) Option {
	return func(c *lockConfig) { c.maxHold = d }
}

// WithMinHold keeps the lock taken for at least d from the start of its
// acquisition: Unlock (and Do, and Client.Close) before then stops renewing
// but leaves the keys on the masters with their TTL set to what is left of
// d, instead of deleting them, and announces nothing. A job triggered on
// every host of a fleet at about the same time, with the lock taken by
// TryLock (or Lock with a short wait) and d longer than the spread of the
// triggers, then runs once per window even when it ends in milliseconds.
// A holder that dies, or loses its lease, before d frees the lock when its
// keys expire (within the TTL): for once per window whatever happens, use a
// TTL of at least d. The lease itself ends at Unlock as usual (Done closes). A lease lost
// before Unlock (other than by Close) is released as usual and keeps
// nothing, and so are the names a failed MultiMutex call took. Default: 0,
// none. Negative is an error.
func WithMinHold(d time.Duration) Option {
	return func(c *lockConfig) { c.minHold = d }
}

// WithOnLost sets a function called once, in its own goroutine, when a lease
// of this lock is lost (not after Unlock), with the same error as Lease.Err.
// It is for code that cannot watch Done. It may call any method of the
// library, Client.Close included: no library lock is held while it runs,
// and Close does not wait for it (after Close has returned, no callback
// starts; one already running may still be running). Default: none.
func WithOnLost(f func(err error)) Option {
	return func(c *lockConfig) { c.onLost = f }
}
