package distlock

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/cenkalti/backoff/v4"
)

// Mutex is a named lock over the Client's masters. It holds no state between
// calls: it may be used from many goroutines at once, and every successful
// Lock or TryLock returns its own Lease. The Redis key is the name itself,
// holding the lease's token, so other Redlock clients that use the same key
// (redsync, the Python DistLock) exclude this one and are excluded by it.
type Mutex struct {
	client  *Client
	name    string // the lock's name, as errors and Lease.Name report it
	channel string // where releases are announced
	lane    lane   // the Client's queue that Lock waits in
	cfg     lockConfig
	kind    *lockKind
	slot    int // a Slots' slot: its index

	// The script arguments that never change, boxed once: putting a string
	// or an int64 in an interface allocates. nameArg is the lock key (the
	// name, or a slot's key), keyArg the key that holds a lease's token
	// (the lock key, or an RWMutex's reader set), acqKeys and healKeys the
	// keys of the kind's acquire and heal scripts (nil: nameArg alone).
	nameArg, keyArg, channelArg, ttlArg any
	acqKeys, healKeys                   []any
}

// lockKind is what a lease holds on each master, and the scripts that take,
// keep and give it back. A Mutex and an RWMutex's writer hold a lock key
// with their token (SET NX); an RWMutex's reader holds an entry in the
// lock's reader set. Every round of every kind goes through the same round
// engine and quorum rules; only the scripts differ.
type lockKind struct {
	// fast, when not nil, is the first acquire round of Lock and TryLock: a
	// plain command with the arguments lock key, token, ttl (see
	// Mutex.acquire).
	fast       *op
	acquire    *op  // keys acqKeys; argv token, ttl[, waiter id when waits]
	heal       *lua // sets the lease's entry again where it is missing: keys healKeys; argv token, ttl
	release    *op  // keys [keyArg]; argv token, release channel, client id
	cleanUp    *op  // release without announcing, after a failed round
	extend     *op  // keys [keyArg]; argv token, ttl
	extendMany *lua // the watchdog's batch: keys, then token and ttl per key
	// waits: Lock passes a waiter id as the acquire script's last argument
	// (a writer that waits bars new readers), and withdraw runs when Lock
	// gives up, to take that bar back.
	waits    bool
	withdraw *op
	tokens   bool // Lease.Token is supported
}

// mutexKind is the plain lock: the lock key holds the holder's token.
var mutexKind = lockKind{fast: &setNXOp, acquire: &acquireOp, heal: acquireScript, release: &releaseOp, cleanUp: &cleanUpOp,
	extend: &extendOp, extendMany: extendManyScript, tokens: true}

// NewMutex returns the lock called name. It checks the name and the options
// and returns an error naming the one that is invalid, or ErrClosed after
// Close; it does not touch the masters. A name may be any string except one
// that starts with "__distlock:" (reserved for the keys the library derives)
// or that contains '}' without a Redis Cluster hash tag.
func (c *Client) NewMutex(name string, opts ...Option) (*Mutex, error) {
	cfg, err := c.lockConfig(name, opts)
	if err != nil {
		return nil, err
	}
	return c.newMutex(name, name, derivedKey(kindRelease, name), cfg, &mutexKind), nil
}

// lockConfig checks that c is open, name valid and opts valid, and returns
// the lock configuration they give.
func (c *Client) lockConfig(name string, opts []Option) (lockConfig, error) {
	if c.closed.Load() {
		return lockConfig{}, ErrClosed
	}
	cfg := defaultLockConfig()
	if len(opts) > 0 {
		// Options take a pointer, which escapes: only a Mutex with options
		// pays that allocation.
		p := new(lockConfig)
		*p = cfg
		for _, o := range opts {
			o(p)
		}
		cfg = *p
	}
	if err := checkName(name); err != nil {
		return lockConfig{}, err
	}
	return cfg, cfg.validate()
}

// newMutex returns a Mutex of kind k whose lock key is key, announcing its
// releases on channel. name is what errors and Lease.Name call it.
func (c *Client) newMutex(name, key, channel string, cfg lockConfig, k *lockKind) *Mutex {
	m := &Mutex{client: c, name: name, channel: channel, lane: lane{channel, k == &readerKind}, cfg: cfg, kind: k}
	c.policy.noteTTL(cfg.ttl + cfg.drift())
	m.nameArg = key
	m.keyArg, m.channelArg, m.ttlArg = m.nameArg, channel, ttlArg(cfg.ttl)
	return m
}

// defaultTTLArg is DefaultTTL in milliseconds, boxed once.
var defaultTTLArg any = DefaultTTL.Milliseconds()

// ttlArg returns ttl in milliseconds, boxed.
func ttlArg(ttl time.Duration) any {
	if ttl == DefaultTTL {
		return defaultTTLArg
	}
	return ttl.Milliseconds()
}

// fenceKey returns the key of the lock's fencing counter.
func (m *Mutex) fenceKey() string { return derivedKey(kindFence, m.nameArg.(string)) }

// Name returns the lock's name, which is also its Redis key.
func (m *Mutex) Name() string { return m.name }

// clock returns the Client's clock.
func (m *Mutex) clock() clock.Clock { return m.client.clock }

// Lock acquires the lock, retrying failed rounds until a round succeeds, ctx
// ends, the retry policy (see WithRetry) returns backoff.Stop, or a failure
// that retrying cannot fix leaves no quorum possible (ErrPermanent).
//
// While someone else holds the lock, Lock waits for its release to be
// announced (the release script publishes on the lock's release channel;
// the Client keeps one subscriber connection per master) and tries again at
// once, with a short random spread; the policy's delay is only the fallback
// for a holder that dies without releasing or a notice that is lost, and no
// wait outlasts the holder's remaining TTL. Within one Client, waiters for
// one name queue in FIFO order and only the head contends on the masters. A
// Client that has just released a lock that others wait for lets them go
// first for a moment.
//
// On failure it returns an error matching ErrNotAcquired and the last
// round's reason (ErrLocked, a *QuorumError, ErrPermanent, ErrNoValidity,
// ErrClosed); if ctx ended, it also matches ctx.Err(), so
// errors.Is(err, context.DeadlineExceeded) tells a timeout from a lock that
// stayed busy. No key of a failed round is left behind.
func (m *Mutex) Lock(ctx context.Context) (*Lease, error) {
	if m.kind.waits {
		return m.client.lock(ctx, &waitingWriter{m: m, id: newToken()}, m.lane, &m.cfg)
	}
	return m.client.lock(ctx, m, m.lane, &m.cfg)
}

// attempt is what Client.lock tries until it gets a lease.
type attempt interface {
	// try makes one attempt; first is true for the first of a Lock call.
	// It returns the lease, or why not and how long to wait at most before
	// the holder's keys expire (0 if unknown).
	try(ctx context.Context, first bool) (*Lease, time.Duration, error)
	// giveUp undoes what the failed attempts left for others to see (a
	// waiting writer's bar), before the caller leaves the Client's queue.
	giveUp()
	// lockName is the name of what is being locked, for events.
	lockName() string
	// exclusive: a lease it returns keeps the next waiter out (a Mutex or
	// an RWMutex's writer; not a reader, not a slot of Slots).
	exclusive() bool
}

// try makes one acquire round (attempt): the first one the fast way.
func (m *Mutex) try(ctx context.Context, first bool) (*Lease, time.Duration, error) {
	return m.acquire(ctx, nil, first)
}

func (m *Mutex) giveUp() {}

func (m *Mutex) lockName() string { return m.name }

func (m *Mutex) exclusive() bool { return m.kind != &readerKind }

// lock is Lock's loop for any attempt a that waits in the Client's queue l
// (for the releases announced on l.ch), with cfg's retry policy (see
// Mutex.Lock).
func (c *Client) lock(ctx context.Context, a attempt, l lane, cfg *lockConfig) (lease *Lease, err error) {
	var b backoff.BackOff // made at the first failed round
	clk := c.clock
	n := c.notifier
	var w *waiter // our place in the Client's queue for this name, once we wait
	// Close waits for the call to end (it ends at once when Close begins),
	// so that what giveUp sends reaches the masters before they close.
	c.active.Add(1)
	defer c.active.Add(-1)
	defer func() {
		if lease == nil {
			a.giveUp()
		}
		if w != nil {
			n.leave(l, w, lease != nil && a.exclusive())
		}
	}()
	var last error   // the reason the last complete round failed
	waiting := false // counted in c.waiting
	first := true    // no round made yet
	if n.queued(l) {
		w = n.join(l) // behind this Client's earlier waiters
		waiting = true
		c.waiting.Add(1)
		defer c.waiting.Add(-1)
	}
	for {
		if w != nil {
			select {
			case <-w.head:
			case <-ctx.Done():
				return nil, notAcquired(last, ctx.Err())
			case <-c.done:
				return nil, c.closedDuring(last)
			}
			if w.afterLocal {
				// The waiter before us took the lock: its release here
				// wakes us (or the fallback delay ends), instead of a round
				// the masters are sure to refuse.
				w.afterLocal = false
				if !c.wait(ctx, w, DefaultRetryInitial) {
					return nil, c.waitEnded(ctx, last)
				}
			}
		}
		if w == nil {
			// Just released here while others elsewhere were told: let them in.
			if d := n.yieldFor(l.ch); d > 0 && !c.wait(ctx, nil, d) {
				return nil, c.waitEnded(ctx, last)
			}
		}
		lease, heldFor, err := a.try(ctx, first)
		first = false
		if err == nil {
			return lease, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			if errors.Is(err, ctxErr) && last != nil {
				// ctx cut this round short: the previous round says why
				// the lock was not acquired before it ended.
				err = last
			}
			return nil, notAcquired(err, ctxErr)
		}
		if isFinal(err) {
			return nil, notAcquired(err, nil)
		}
		last = err
		if !waiting {
			waiting = true
			c.waiting.Add(1)
			defer c.waiting.Add(-1)
		}
		if w == nil && errors.Is(err, ErrLocked) {
			// From now on a release notice wakes us. Subscribing takes a
			// moment: try once more at once, in case the release came first.
			if w = n.join(l); w != nil {
				if c.obs.on {
					c.obs.report(Event{Kind: EventWait, Name: a.lockName(), Masters: len(c.masters), Err: err})
				}
				continue
			}
		}
		if b == nil {
			b = cfg.backOff(clk)
		}
		d := b.NextBackOff()
		if d == backoff.Stop {
			return nil, notAcquired(err, nil)
		}
		if heldFor > 0 && heldFor < d {
			d = heldFor
		}
		if c.obs.on {
			c.obs.report(Event{Kind: EventRetry, Name: a.lockName(), Masters: len(c.masters), Duration: d, Err: err})
		}
		if !c.wait(ctx, w, d) {
			return nil, c.waitEnded(ctx, err)
		}
	}
}

// waitEnded is the error of a Lock whose wait ended because Close began or
// ctx ended; last is why the last attempt failed (nil if none).
func (c *Client) waitEnded(ctx context.Context, last error) error {
	if c.closed.Load() {
		return c.closedDuring(last)
	}
	return notAcquired(last, ctx.Err())
}

// closedDuring is the error of a Lock that Close ended while it waited;
// last is why the last attempt failed.
func (c *Client) closedDuring(last error) error {
	if last == nil {
		return notAcquired(ErrClosed, nil)
	}
	return notAcquired(fmt.Errorf("%w (last attempt: %w)", ErrClosed, last), nil)
}

// TryLock makes one acquire round on every master and returns the Lease if a
// quorum accepted it within its validity. Otherwise it returns an error that
// matches ErrNotAcquired and the reason: ErrLocked when another owner holds
// the lock on a master, a *QuorumError naming every master that did not
// agree, ErrNoValidity when the quorum came too late, ctx.Err() when ctx
// ended first. A failed round leaves no key of its own behind. Once the
// masters have the scripts, the round is a plain SET NX PX (see setNXOp),
// which reports a lock key of another type than a string as ErrLocked;
// Lock's later rounds fail on it with WRONGTYPE (ErrPermanent).
func (m *Mutex) TryLock(ctx context.Context) (*Lease, error) {
	lease, _, err := m.acquire(ctx, nil, true)
	if err != nil {
		return nil, notAcquired(err, ctx.Err())
	}
	return lease, nil
}

// acquireOp: acquire.lua answers OK when it set the key, or the holder's
// remaining PTTL when the key is taken.
var acquireOp = op{name: "acquire", script: acquireScript, judge: judgeAcquire}

// judgeAcquire counts OK as yes, and a PTTL (acquire.lua) or nil (SET NX)
// as taken by another owner.
func judgeAcquire(val any) (vote, error) {
	switch v := val.(type) {
	case string:
		if v == "OK" {
			return voteYes, nil
		}
	case int64, nil:
		return voteNo, ErrLocked
	}
	return voteFailed, unexpected(val)
}

// setNXOp is the first acquire round of a Mutex: plain SET key token NX PX
// ttl, which answers OK when it set the key and nil when the key exists.
// It costs the master a fraction of acquire.lua (no script), but tells
// nothing about the holder: a refused first round is followed by
// acquire.lua rounds, which answer the holder's remaining time to live and
// fail with WRONGTYPE on a key that is no lock (plain SET NX answers such a
// key as taken). It is sent only once every master has loaded the scripts
// on its connection (see master.scripts).
var setNXOp = op{name: "acquire", cmd: "SET", judge: judgeAcquire}

// Arguments of SET NX PX.
var nxArg, pxArg any = "NX", "PX"

// cleanUpOp deletes the token of a failed acquire round without announcing
// it: it frees no lock anyone was told about, and announcing it would wake
// every waiter into the next split vote.
var cleanUpOp = op{name: "release", script: releaseScript, all: true, resend: true, judge: judgeDone(errMissing, errOtherOwner)}

// noAnnounce, as release.lua's channel, deletes without publishing.
var noAnnounce any = ""

// acquire runs one Redlock acquire round. On failure it also returns how long
// to wait at most before the earliest holder's key expires (0 if unknown).
// waiter is a waiting writer's id (see lockKind.waits), or nil. fast sends
// the kind's fast command, if it has one, instead of its acquire script.
func (m *Mutex) acquire(ctx context.Context, waiter any, fast bool) (*Lease, time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	c := m.client
	if c.closed.Load() {
		return nil, 0, ErrClosed
	}
	c.active.Add(1) // Close lets the round and its clean-up finish
	defer c.active.Add(-1)
	token := any(newToken()) // boxed once, for every round of this lease
	var t tally
	var buf [8]any
	var args []any
	if fast && m.kind.fast != nil && c.scriptsLoaded() {
		t.init(c, m.kind.fast, m.name)
		args = append(buf[:0], m.nameArg, token, nxArg, pxArg, m.ttlArg)
	} else {
		t.init(c, m.kind.acquire, m.name)
		args = append(m.appendKeys(buf[:0], m.acqKeys), token, m.ttlArg)
	}
	if m.kind.waits {
		if waiter == nil {
			waiter = noAnnounce // TryLock: no bar for readers
		}
		args = append(args, waiter)
	}
	t0 := c.clock.Now()
	// Fast quorum: the round ends as soon as a quorum said yes, or so many
	// said no that a quorum is impossible. A slow master is not waited for.
	t.run(ctx, args)
	until := t0.Add(m.cfg.ttl - m.cfg.drift())
	now := c.clock.Now()
	if t.stopped == nil && t.won() && now.Before(until) {
		if l := newLease(m, token, until, t.touched()); l != nil {
			if c.obs.on {
				c.obs.report(roundEvent(EventAcquire, &t, now.Sub(t0), nil))
			}
			return l, 0, nil
		}
		m.cleanUp(token, &t) // Close came first: release what we took
		return nil, 0, m.acquireFailed(&t, now.Sub(t0), ErrClosed)
	}
	m.cleanUp(token, &t)
	// The soonest expiry of another owner's key: t.lo is the smallest PTTL
	// answered (-1, a key without expiry, tells nothing). PTTL 0 means less
	// than a millisecond is left: still a known expiry, so wait 1ms rather
	// than a full backoff.
	var heldFor time.Duration
	if t.lo >= 0 {
		heldFor = max(time.Duration(t.lo)*time.Millisecond, time.Millisecond)
	}
	var err error
	switch {
	case t.stopped != nil:
		err = t.stopped
	case t.won():
		err = fmt.Errorf("%w: acquire %q: the round took %v (ttl %v, drift %v)", ErrNoValidity, m.name, now.Sub(t0), m.cfg.ttl, m.cfg.drift())
	default:
		err = t.quorumError()
	}
	return nil, heldFor, m.acquireFailed(&t, now.Sub(t0), err)
}

// scriptsLoaded reports whether every master has loaded the scripts on its
// current connection (see master.scripts), leaving out the masters
// suspected down: they answer no round until they answer probes again, and
// a master that comes back loads the scripts on its new connection before
// the rounds sent on it.
func (c *Client) scriptsLoaded() bool {
	for _, ms := range c.masters {
		if !ms.scripts.Load() && ms.downErr() == nil {
			return false
		}
	}
	return true
}

// appendKeys appends keys, or the lock key when keys is nil, to args.
func (m *Mutex) appendKeys(args, keys []any) []any {
	if keys == nil {
		return append(args, m.nameArg)
	}
	return append(args, keys...)
}

// acquireFailed reports the acquire round t that failed with err after d,
// and returns err.
func (m *Mutex) acquireFailed(t *tally, d time.Duration, err error) error {
	if obs := m.client.obs; obs.on {
		obs.report(roundEvent(EventAcquire, t, d, err))
	}
	return err
}

// cleanUp releases token after a failed round on every master that may hold
// it: those that said yes, failed (a lost reply may hide a key that was set),
// or have not answered yet. A master that answered "held by another owner"
// ran the script without setting the key, so it is skipped.
//
// The release runs on the pipeline, not under the caller's context (which may
// be the reason the round failed), and is bounded by the master timeout. It
// waits for the masters that answered the acquire; a master whose acquire is
// still outstanding gets its release queued behind that acquire on the same
// connection, so the release takes effect after it, and is not waited for.
// A master that is down gets it when it answers again.
func (m *Mutex) cleanUp(token any, acq *tally) {
	c := m.client
	var t tally
	t.init(c, m.kind.cleanUp, m.name)
	for i := range acq.n {
		switch {
		case acq.vote(i) == voteNo, errors.Is(acq.errOf(i), errNotSent):
			t.setVote(i, notSent) // nothing of ours was set there
		case acq.vote(i) == pending:
			t.setVote(i, notAwaited)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	t.run(ctx, []any{m.keyArg, token, noAnnounce, c.idArg})
}

// run runs a round of o on the lock's masters with args and returns its
// tally. The typed layers reach the masters through it and Lease.run.
func (m *Mutex) run(ctx context.Context, o *op, args ...any) *tally {
	t := newTally(m.client, o, m.name)
	t.run(ctx, args)
	return t
}

// newToken returns 128 random bits, unique per acquisition.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand panics rather than return short
	return base64.RawURLEncoding.EncodeToString(b[:])
}
