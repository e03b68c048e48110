package distlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Lease is one holding of a Mutex, returned by Lock and TryLock. It is held
// until Unlock, or until it is lost. Done and Context report both ends at
// once.
//
// The Client's watchdog keeps the lease alive: every ttl/3 (see
// WithRenewalInterval) it extends the key on every master, with the quorum
// and validity rules of acquire, and Until moves forward. On a master where
// the key is missing (the master restarted, or never got the acquire), the
// extension sets it again, only if absent, so the lease regains its full
// tolerance of (N-1)/2 failed masters. A failed extension is retried until
// the safety deadline Until minus the margin (see WithRenewalMargin); a
// quorum answering that the key is gone or another owner's ends it at once.
// Either way the lease is lost: Done closes and Context is cancelled with a
// cause matching ErrLeaseLost, before any other client could acquire the
// lock, as long as the clocks keep to the drift allowance. It is NOT safe to
// assume the lock is still held after Done closed or after Until; a holder
// that watches Done never overlaps the next.
//
// A Lease is safe for concurrent use. A second Unlock, and Unlock or Extend
// on a nil or ended Lease, return an error matching ErrNotHeld and never
// panic.
type Lease struct {
	mutex *Mutex
	token any    // the acquisition's token: a string, boxed once
	w     *watch // the watchdog's record of this lease (&wd); only the watchdog reads it
	wd    watch  // its storage: one allocation less per lease

	acquired time.Time // the start of the acquire round
	// touched: bit i is set when master i may hold the lease's key (its
	// acquire was sent there, or the watchdog healed it there); the release
	// goes to those masters only. Written before the lease is watched and
	// under the renewer's mutex; read by Unlock after the renewer let go.
	touched uint64

	mu       sync.Mutex // guards the fields below
	until    time.Time
	basis    time.Time // the reading until was computed at: suspends after it shorten it (suspend.go)
	released bool      // Unlock was called
	ending
	group *MultiLease // told when this lease is lost

	fenceMu sync.Mutex // serializes Token
	fence   uint64     // the fencing token, once handed out
}

// ending is how a lease ends, signalled by Done and Context; its owner's
// mutex guards it.
type ending struct {
	ended  bool  // Done is (or will be, when made) closed
	err    error // why it ended: nil after Unlock, ErrLeaseLost when lost
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelCauseFunc
}

var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// doneChan returns the channel of Done, made on the first call.
func (e *ending) doneChan() <-chan struct{} {
	if e.done == nil {
		if e.ended {
			return closedChan
		}
		e.done = make(chan struct{})
	}
	return e.done
}

// context returns the context of Context, made on the first call.
func (e *ending) context() context.Context {
	if e.ctx == nil {
		e.ctx, e.cancel = context.WithCancelCause(context.Background())
		if e.ended {
			e.cancel(e.err)
		}
	}
	return e.ctx
}

// end records the end with err (nil for Unlock) and signals it, once; it
// reports false if it had already ended.
func (e *ending) end(err error) bool {
	if e.ended {
		return false
	}
	e.ended, e.err = true, err
	if e.done != nil {
		close(e.done)
	}
	if e.cancel != nil {
		e.cancel(err)
	}
	return true
}

// newLease returns a held lease and hands it to the Client's watchdog, or
// nil if the Client was closed meanwhile. touched: see Lease.touched.
func newLease(m *Mutex, token any, until time.Time, touched uint64) *Lease {
	acquired := until.Add(m.cfg.drift() - m.cfg.ttl)
	basis := acquired
	if m.client.watchSuspend {
		until, basis = m.client.settled(until, acquired)
	}
	l := &Lease{mutex: m, token: token, until: until, basis: basis, acquired: acquired, touched: touched}
	if !m.client.renewer.add(l) {
		return nil
	}
	return l
}

// Name returns the name of the lock this lease holds; for a slot of a
// Slots, the slots' name and the slot's index, as "name[i]".
func (l *Lease) Name() string { return l.mutex.name }

// Until returns the end of the lease's validity as this client computed it:
// the start of the last successful acquire or extend round, plus the TTL,
// minus the drift, minus the time the host was suspended since (measured
// as the time the wall clock moved beyond the monotonic clock, which stops
// during a suspend while the masters' keys expire). Extensions move it
// forward.
func (l *Lease) Until() time.Time {
	c := l.mutex.client
	var now time.Time
	if c.watchSuspend {
		now = c.clock.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until.Add(-c.suspended(l.basis, now))
}

// Done returns a channel that is closed when the lease ends: at Unlock, or
// when it is lost.
func (l *Lease) Done() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.doneChan()
}

// Context returns a context that is cancelled when the lease ends, at the
// same moment Done is closed. Its cause (context.Cause) is the lease's error
// when it was lost, and context.Canceled after Unlock.
func (l *Lease) Context() context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.context()
}

// Err returns nil while the lease is held and after a clean Unlock, and an
// error matching ErrLeaseLost once it was lost.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// held reports whether the lease has neither been unlocked nor lost.
func (l *Lease) held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.ended && !l.released
}

// lost ends the lease as lost for reason and signals Done and Context. It is
// the one way the watchdog ends a lease, and reports false if the lease had
// already ended.
func (l *Lease) lost(reason error) bool {
	return l.end(fmt.Errorf("%w: %q: %w", ErrLeaseLost, l.mutex.name, reason))
}

// end marks the lease ended with err (nil for Unlock) and signals Done and
// Context. It reports false if the lease had already ended.
func (l *Lease) end(err error) bool {
	l.mu.Lock()
	ended := l.ending.end(err)
	g := l.group
	l.mu.Unlock()
	if ended && g != nil {
		if err == nil { // unlocked on its own, not through the MultiLease
			err = fmt.Errorf("%w: %q was unlocked on its own", ErrNotHeld, l.mutex.name)
		}
		g.end(err)
	}
	return ended
}

// join makes g end when this lease ends (at once if it has).
func (l *Lease) join(g *MultiLease) {
	l.mu.Lock()
	l.group = g
	ended, err := l.ended, l.err
	l.mu.Unlock()
	if ended {
		if err == nil {
			err = fmt.Errorf("%w: %q was unlocked on its own", ErrNotHeld, l.mutex.name)
		}
		g.end(err)
	}
}

// renewed moves the lease's validity to until, an extension round's end of
// validity settled at basis (see Client.settled), if that is later than the
// current validity settled at the same basis, and returns the validity it
// keeps. Both are settled at basis, so a suspend is counted once.
func (l *Lease) renewed(until, basis time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return l.until
	}
	c := l.mutex.client
	if basis.Before(l.basis) { // the watchdog settled the lease later: settle until there too
		until, basis = until.Add(-c.suspended(basis, l.basis)), l.basis
	}
	cur := l.until.Add(-c.suspended(l.basis, basis))
	l.until, l.basis = maxTime(cur, until), basis
	return l.until
}

// releaseOp: release.lua answers 1 + the number of subscribers its
// announcement reached when it deleted our key, 0 when the key is gone, -1
// when it holds another owner's token.
var releaseOp = op{name: "release", script: releaseScript, gone: true, resend: true, judge: judgeDone(errMissing, errOtherOwner)}

// Unlock ends the lease and deletes the lock's key on every master where it
// still holds this lease's token (never another owner's key). Done is closed
// before the release is sent. With WithMinHold, a lease unlocked before its
// minimum hold has passed leaves the keys until then instead (their TTL set
// to what is left), unrenewed and unannounced: the lock stays taken until
// the acquisition plus the minimum hold.
//
// It returns nil when a quorum of masters confirmed that our token is gone
// (deleted now, or no longer there). It returns an error matching ErrNotHeld
// when the lease had already been unlocked or lost (Lease.Err then says why)
// or when our token was missing on so many masters (more than N minus the
// quorum) that no quorum held it; otherwise a *QuorumError (the
// keys that could not be deleted expire with their TTL, and a master that
// was down gets the release again when it answers). Except after a first
// Unlock, the release goes out in every case, even if ctx is already done;
// ctx bounds only the wait for answers. It goes to the masters the lease's
// key may be on (those its acquire was sent to, and those the watchdog
// healed); the others count as having answered that the key is gone.
func (l *Lease) Unlock(ctx context.Context) error {
	return l.unlock(ctx, true)
}

// unlock is Unlock; minHold false releases the keys even within the
// minimum hold (a MultiMutex giving back what a failed call took).
func (l *Lease) unlock(ctx context.Context, minHold bool) error {
	if l == nil {
		return ErrNotHeld
	}
	c := l.mutex.client
	c.active.Add(1) // Close waits for this release before it closes the masters
	defer c.active.Add(-1)
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		if !minHold {
			// A failed MultiMutex call gives back what it took even if
			// Close released it first under the minimum hold: delete the
			// keys still holding our token.
			_ = l.mutex.release(ctx, l.token, nil, everyMaster)
		}
		return fmt.Errorf("%w: %q: already unlocked", ErrNotHeld, l.mutex.name)
	}
	l.released = true
	l.mu.Unlock()
	// Stop the watchdog first: after this, no extension of this lease is
	// sent, and any sent before runs before the release on every master.
	// Then the lease's end is settled: lost before (Err says why), or ended
	// now by Unlock.
	c.renewer.remove(l.w)
	l.end(nil)
	lostErr := l.Err()

	var keep any
	if minHold && (lostErr == nil || errors.Is(lostErr, ErrClosed)) {
		keep = l.keep() // a lease lost (other than by Close) keeps nothing
	}
	err := l.mutex.release(ctx, l.token, keep, l.touched)
	switch {
	case lostErr != nil && err == nil:
		return fmt.Errorf("%w: %w", ErrNotHeld, lostErr)
	case lostErr != nil && !errors.Is(err, ErrNotHeld):
		return fmt.Errorf("%w: %w (release: %w)", ErrNotHeld, lostErr, err)
	}
	return err
}

// keep returns how long the keys must stay after Unlock for the minimum
// hold (WithMinHold), rounded up to whole milliseconds, or nil for none.
func (l *Lease) keep() any {
	cfg := &l.mutex.cfg
	if cfg.minHold <= 0 {
		return nil
	}
	left := l.acquired.Add(cfg.minHold).Sub(l.mutex.client.clock.Now())
	if left <= 0 {
		return nil
	}
	return int64((left + time.Millisecond - 1) / time.Millisecond)
}

// release runs one release round for token (see Lease.Unlock for the
// results) on the masters in touched (see Lease.touched): the others never
// got the key, so they count as having answered that it is gone. keep, when
// not nil, is how many milliseconds the keys stay (WithMinHold) instead of
// being deleted.
func (m *Mutex) release(ctx context.Context, token, keep any, touched uint64) error {
	c := m.client
	var t tally
	t.init(c, m.kind.release, m.name)
	t.leaveOut(touched, errMissing)
	var t0 time.Time
	if c.obs.on {
		t0 = c.clock.Now()
	}
	if keep != nil {
		t.run(ctx, []any{m.keyArg, token, m.channelArg, c.idArg, keep})
	} else {
		t.run(ctx, []any{m.keyArg, token, m.channelArg, c.idArg})
	}
	if t.yes > 0 && keep == nil {
		// Wake this Client's next waiter at once; and if the release was
		// announced to subscribers, give them the first go at the lock.
		c.notifier.released(m.channel)
		if t.hi > replyDone { // 1 + the subscribers the announcement reached
			c.notifier.yield(m.channel)
		}
	}
	var err error
	switch {
	case t.refused():
		err = fmt.Errorf("%w: %w", ErrNotHeld, t.quorumError())
	case t.yes+t.no >= t.q:
		// deleted or already gone on a quorum
	default:
		err = t.quorumError()
	}
	if c.obs.on {
		c.obs.report(roundEvent(EventRelease, &t, c.clock.Since(t0), err))
	}
	return err
}

// extendOp: extend.lua answers 1 when it extended our key, 0 when the key is
// missing, -1 when it holds another owner's token.
var extendOp = op{name: "extend", script: extendScript, judge: judgeDone(errMissing, errOtherOwner)}

// Extend resets the lock's TTL on every master that still holds this
// lease's token and, when a quorum did so within the validity, moves Until
// to the start of this round plus TTL minus drift. Masters where the key was
// missing get it again (only if absent).
//
// When a quorum answers that the key expired or holds another owner's token,
// the lease is lost (Done closes) and Extend returns an error matching
// ErrNotHeld; so does Extend on a lease that already ended. A quorum reached
// too late returns an error matching ErrNoValidity. Other failures
// (timeouts, masters down) return a *QuorumError. In both of these cases the
// lease stays as it was, valid until Until.
func (l *Lease) Extend(ctx context.Context) error {
	if l == nil {
		return ErrNotHeld
	}
	if !l.held() {
		return fmt.Errorf("%w: %q: the lease ended", ErrNotHeld, l.mutex.name)
	}
	m := l.mutex
	c := m.client
	var t tally
	t.init(c, m.kind.extend, m.name)
	t0 := c.clock.Now()
	// Replies that come after the round is decided (fast quorum) go to the
	// watchdog, which heals a master that answers that the key is missing.
	sink := newLateSink(t.n, func(r reply) { c.renewer.late(l.w, r) })
	t.runOn(ctx, []any{m.keyArg, l.token, m.ttlArg}, sink, sink.ch)
	until, basis := c.settled(t0.Add(m.cfg.ttl-m.cfg.drift()), t0)
	won := t.won() && basis.Before(until)
	defer sink.decided(won)
	var err error
	switch {
	case won:
		if !c.renewer.extended(l.w, until, basis, missing(&t)) {
			err = fmt.Errorf("%w: %q: the lease ended during Extend", ErrNotHeld, m.name)
		}
	case t.won():
		err = fmt.Errorf("%w: extend %q: the round took %v", ErrNoValidity, m.name, c.clock.Since(t0))
	default:
		err = t.err(ErrNotHeld)
	}
	if c.obs.on { // before the loss it may cause, in order
		c.obs.report(roundEvent(EventExtend, &t, c.clock.Since(t0), err))
	}
	if !won && !t.won() && t.refused() {
		c.renewer.lose(l.w, err)
	}
	return err
}

// refusedEnds returns the error of a round that acts for this lease, or nil
// if it won. When a quorum answered that the key is not ours, the lease is
// lost (as the watchdog would find at its next renewal) and the error
// matches ErrNotHeld.
func (l *Lease) refusedEnds(t *tally) error {
	err := t.err(ErrNotHeld)
	if err != nil && t.refused() {
		l.mutex.client.renewer.lose(l.w, err)
	}
	return err
}

// missing returns the masters of an extend round that answered that the key
// is missing, or nil.
func missing(t *tally) []int {
	var idx []int
	for i := range t.n {
		if t.vote(i) == voteNo && errors.Is(t.errOf(i), errMissing) {
			idx = append(idx, i)
		}
	}
	return idx
}

// run runs a round of o that acts for this lease and returns its tally: the
// arguments are keys, then the lease's token, then argv (so every such
// script finds the token in ARGV[1]). The typed layers reach the masters
// through it and Mutex.run.
func (l *Lease) run(ctx context.Context, o *op, keys []any, argv ...any) *tally {
	args := make([]any, 0, len(keys)+1+len(argv))
	args = append(append(append(args, keys...), l.token), argv...)
	return l.mutex.run(ctx, o, args...)
}
