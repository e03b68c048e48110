package distlock

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
)

// Mutex is a named lock over the Client's masters. It holds no state between
// calls: it may be used from many goroutines at once, and every successful
// Lock or TryLock returns its own Lease. The Redis key is the name itself,
// holding the lease's token, so other Redlock clients that use the same key
// (redsync, the Python DistLock) exclude this one and are excluded by it.
type Mutex struct {
	client   *Client
	name     string
	fenceKey string // the fencing counter beside the lock key
	channel  string // where releases are announced
	cfg      lockConfig

	// The script arguments that never change, boxed once: putting a string
	// or an int64 in an interface allocates.
	nameArg, fenceArg, channelArg, ttlArg any
}

// NewMutex returns the lock called name. It checks the name and the options
// and returns an error naming the one that is invalid; it does not touch the
// masters.
func (c *Client) NewMutex(name string, opts ...Option) (*Mutex, error) {
	cfg := defaultLockConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(name); err != nil {
		return nil, err
	}
	m := &Mutex{client: c, name: name, fenceKey: name + ":fence", channel: name + releaseSuffix, cfg: cfg}
	m.nameArg, m.fenceArg, m.channelArg, m.ttlArg = m.name, m.fenceKey, m.channel, m.cfg.ttl.Milliseconds()
	return m, nil
}

// Name returns the lock's name, which is also its Redis key.
func (m *Mutex) Name() string { return m.name }

// TryLock makes one acquire round on every master and returns the Lease if a
// quorum accepted it within its validity. Otherwise it returns an error that
// matches ErrNotAcquired and is a *QuorumError; it also matches ErrLocked when
// another owner holds the lock, and ctx.Err() when ctx ended first. A failed
// round leaves no key of its own behind.
func (m *Mutex) TryLock(ctx context.Context) (*Lease, error) {
	lease, _, err := m.acquire(ctx)
	if err != nil {
		return nil, notAcquired(err, ctx.Err())
	}
	return lease, nil
}

// acquire runs one Redlock acquire round. On failure it also returns how long
// to wait at most before the earliest holder's key expires (0 if unknown).
func (m *Mutex) acquire(ctx context.Context) (*Lease, time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	c := m.client
	n, q := len(c.masters), c.quorum
	token := any(newToken()) // boxed once, for every round of this lease

	t0 := c.clock.Now()
	replies := c.fanout(acquireScript, []any{m.nameArg, m.fenceArg, token, m.ttlArg}, time.Time{})
	var (
		yes      int
		failed   int
		outcome  = make([]error, n, 8) // nil: yes or no answer yet
		answered = make([]bool, n, 8)
		heldFor  time.Duration // the soonest expiry of another owner's key
		ctxErr   error
	)
	// Fast quorum: stop as soon as a quorum said yes, or as soon as so many
	// said no that a quorum is impossible. A slow master is not waited for.
wait:
	for yes < q && failed <= n-q {
		select {
		case r := <-replies:
			answered[r.idx] = true
			switch v := r.val.(type) {
			case string: // the script's status reply OK
				if r.err == nil && v == "OK" {
					yes++
					continue
				}
			case int64: // the holder's remaining PTTL
				if r.err == nil {
					outcome[r.idx] = ErrLocked
					failed++
					// PTTL 0 means less than a millisecond is left: still a
					// known expiry, so wait 1ms rather than a full backoff.
					// -1 (no expiry) tells nothing.
					if d := max(time.Duration(v)*time.Millisecond, time.Millisecond); v >= 0 && (heldFor == 0 || d < heldFor) {
						heldFor = d
					}
					continue
				}
			}
			if r.err == nil {
				r.err = fmt.Errorf("unexpected reply %T to acquire", r.val)
			}
			outcome[r.idx] = r.err
			failed++
		case <-ctx.Done():
			ctxErr = ctx.Err()
			break wait
		}
	}
	until := t0.Add(m.cfg.ttl - m.cfg.drift())
	now := c.clock.Now()
	if ctxErr == nil && yes >= q && now.Before(until) {
		return newLease(m, token, until), 0, nil
	}

	m.cleanUp(token, outcome, answered)
	for i := range outcome {
		if !answered[i] {
			outcome[i] = errNoAnswer
		}
	}
	if ctxErr != nil {
		return nil, heldFor, ctxErr
	}
	if yes >= q {
		return nil, heldFor, fmt.Errorf("distlock: acquire %q: a quorum agreed but the round took %v, leaving no validity (ttl %v, drift %v)",
			m.name, now.Sub(t0), m.cfg.ttl, m.cfg.drift())
	}
	return nil, heldFor, m.quorumError("acquire", yes, outcome)
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
func (m *Mutex) cleanUp(token any, outcome []error, answered []bool) {
	c := m.client
	replies := make(replyChan, len(c.masters))
	// Not announced (empty channel): deleting our own keys of a round that
	// failed frees no lock anyone was told about, and announcing it would
	// wake every waiter into the next split vote.
	cmds, args := c.newRound(releaseScript, []any{m.nameArg, token, noAnnounce, c.idArg})
	resendUntil := time.Now().Add(m.cfg.ttl)
	waitFor := 0
	for i, ms := range c.masters {
		if answered[i] && errors.Is(outcome[i], ErrLocked) {
			continue
		}
		if answered[i] {
			waitFor++
		}
		cmds[i] = command{script: releaseScript, args: args, idx: i, reply: replies, resendUntil: resendUntil}
		ms.submit(&cmds[i])
	}
	if waitFor == 0 {
		return
	}
	timeout := time.NewTimer(c.masters[0].timeout)
	defer timeout.Stop()
	for waitFor > 0 {
		select {
		case r := <-replies:
			if answered[r.idx] {
				waitFor--
			}
		case <-timeout.C:
			return
		}
	}
}

// fanout sends one script call to every master and returns the channel on
// which their replies arrive, each tagged with the master's index.
func (c *Client) fanout(script *lua, args []any, resendUntil time.Time) replyChan {
	replies := make(replyChan, len(c.masters))
	cmds, full := c.newRound(script, args)
	for i, ms := range c.masters {
		cmds[i] = command{script: script, args: full, idx: i, reply: replies, resendUntil: resendUntil}
		ms.submit(&cmds[i])
	}
	return replies
}

// noAnnounce, as release.lua's channel, deletes without publishing.
var noAnnounce any = ""

// roundBuf holds a round's commands and their shared EVALSHA arguments in
// one allocation, for up to 5 masters and 8 arguments.
type roundBuf struct {
	cmds [5]command
	args [8]any
}

// newRound returns the commands of one round (one per master, to fill in)
// and script's EVALSHA arguments for args.
func (c *Client) newRound(script *lua, args []any) ([]command, []any) {
	n := len(c.masters)
	if n <= len(roundBuf{}.cmds) && 2+len(args) <= len(roundBuf{}.args) {
		buf := new(roundBuf)
		return buf.cmds[:n], script.appendEvalsha(buf.args[:0], args...)
	}
	return make([]command, n), script.evalsha(args...)
}

// quorumError builds the error of a round that got agreed of the masters;
// errs[i] is master i's failure or nil.
func (m *Mutex) quorumError(op string, agreed int, errs []error) *QuorumError {
	c := m.client
	qe := &QuorumError{Op: op, Name: m.name, Agreed: agreed, Needed: c.quorum, Masters: len(c.masters)}
	for i, err := range errs {
		if err != nil {
			qe.Errors = append(qe.Errors, &MasterError{Addr: c.masters[i].addr, Err: err})
		}
	}
	return qe
}

// newToken returns 128 random bits, unique per acquisition.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand panics rather than return short
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Do locks name (waiting as Lock does), runs fn, and unlocks. fn's context
// is cancelled when ctx ends or when the lease is lost; Do then returns fn's
// error joined with the lease's error (matching ErrLeaseLost). If the lock is
// not acquired, fn does not run and Do returns Lock's error. The unlock runs
// even if ctx has ended; its error, if any, is joined to fn's.
func (c *Client) Do(ctx context.Context, name string, fn func(ctx context.Context) error, opts ...Option) error {
	m, err := c.NewMutex(name, opts...)
	if err != nil {
		return err
	}
	fnErr, endErr := c.withLease(ctx, m, func(ctx context.Context, _ *Lease) error { return fn(ctx) })
	return errors.Join(fnErr, endErr)
}

// withLease locks m, runs fn under the lease, and unlocks (see Do). It
// returns Lock's or fn's error, and apart from it how the lease ended: its
// loss, or else Unlock's error.
func (c *Client) withLease(ctx context.Context, m *Mutex, fn func(ctx context.Context, lease *Lease) error) (fnErr, endErr error) {
	lease, err := m.Lock(ctx)
	if err != nil {
		return err, nil
	}
	fnCtx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(lease.Context(), func() { cancel(context.Cause(lease.Context())) })
	fnErr = fn(fnCtx, lease)
	stop()
	cancel(nil)
	if lost := lease.Err(); lost != nil {
		_ = lease.Unlock(context.WithoutCancel(ctx)) // clean what is left; the loss is the news
		return fnErr, lost
	}
	return fnErr, lease.Unlock(context.WithoutCancel(ctx))
}
