package distlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Election is leader election over the Client's masters with a typed leader
// value (an address, an id): one candidate at a time runs its lead function,
// and followers read or watch who leads. The leader is the holder of the
// election's lock (named like the election); its value is recorded beside
// the lock with its fencing token as the term, and announced on the
// election's channel (see the README's key layout).
//
// An Election is safe for concurrent use; each candidate process calls Run.
type Election[T any] struct {
	mutex     *Mutex
	recordKey string
	channel   string
	codec     Codec[T]

	mu   sync.Mutex
	term *leadership // the running leadership; nil when not leading
}

var errResigned = errors.New("distlock: resigned")

// NewElection returns the election called name. opts configure its lock: the
// TTL bounds how long followers wait after a leader dies without resigning.
// A nil codec means JSON (encoding/json).
func NewElection[T any](c *Client, name string, codec Codec[T], opts ...Option) (*Election[T], error) {
	m, err := c.NewMutex(name, opts...)
	if err != nil {
		return nil, err
	}
	if codec == nil {
		codec = jsonCodec[T]{}
	}
	key := derivedKey(kindLeader, name)
	return &Election[T]{mutex: m, recordKey: key, channel: key, codec: codec}, nil
}

// Run campaigns until elected, records and announces value as the leader's,
// and calls lead with a context that ends when leadership ends: the lease is
// lost, Resign is called, or ctx ends. When leadership was lost, or taking
// office failed for a reason that may pass (a master down, a timeout), Run
// steps down and campaigns again, pausing between attempts as the
// election's retry policy says (see WithRetry).
//
// It returns only when ctx ends (ctx.Err() itself), after Resign (nil,
// whatever lead returned), when lead returns while still leader (lead's
// error), or when campaigning cannot
// go on: the retry policy stopped, a failure that retrying cannot fix
// (ErrPermanent), or the Client was closed (ErrClosed). Each time it steps
// down first: it retracts its record and unlocks. If lead panics, Run steps
// down and panics again with the same value.
func (e *Election[T]) Run(ctx context.Context, value T, lead func(ctx context.Context) error) error {
	data, err := e.codec.Marshal(value)
	if err != nil {
		return fmt.Errorf("distlock: election %q: encode: %w", e.mutex.Name(), err)
	}
	var b backoff.BackOff // made at the first failure to take office
	for {
		lease, err := e.mutex.Lock(ctx)
		if ctx.Err() != nil {
			if lease != nil {
				_ = lease.Unlock(context.WithoutCancel(ctx))
			}
			return ctx.Err()
		}
		if err != nil {
			return err // Lock retries whatever may pass
		}
		done, err := e.serve(ctx, lease, data, lead)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case done:
			return err
		case isFinal(err):
			return err
		case err == nil:
			b = nil  // a fresh retry policy for each term
			continue // leadership was lost: campaign again at once
		}
		// Taking office failed for a reason that may pass: campaign again
		// after the retry policy's pause.
		if b == nil {
			b = e.mutex.cfg.backOff(e.mutex.clock())
		}
		d := b.NextBackOff()
		if d == backoff.Stop {
			return err
		}
		if !sleep(ctx, e.mutex.clock(), d) {
			return ctx.Err()
		}
	}
}

// serve leads under lease and steps down. done reports that Run must return
// err: lead returned while leader (its error), or Resign (nil). Otherwise
// leadership ended because the lease could not be kept (err nil), or taking
// office failed (err says why).
func (e *Election[T]) serve(ctx context.Context, lease *Lease, data []byte, lead func(ctx context.Context) error) (done bool, err error) {
	defer func() {
		e.retract(context.WithoutCancel(ctx), lease)
		_ = lease.Unlock(context.WithoutCancel(ctx))
	}()
	term, err := lease.Token(ctx)
	if err != nil {
		return false, err
	}
	// The term starts before the record is published: an observer may see
	// this leader as soon as the record is there, and Resign must work then.
	leadCtx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(lease.Context(), func() { cancel(context.Cause(lease.Context())) })
	tm := &leadership{cancel: cancel, lease: lease}
	e.mu.Lock()
	e.term = tm
	e.mu.Unlock()
	// Deferred, so that it runs if lead panics (or calls runtime.Goexit):
	// leadership ends, the retract and Unlock above run next, and a panic
	// goes on, unchanged.
	defer func() {
		stop()
		cancel(nil)
		e.mu.Lock()
		if e.term == tm {
			e.term = nil
		}
		e.mu.Unlock()
	}()
	err = e.publish(ctx, lease, term, data)
	e.mu.Lock()
	early := tm.resigned
	tm.leading = !early && err == nil
	e.mu.Unlock()
	switch {
	case early: // Resign while taking office: lead never runs
		return true, nil
	case err != nil:
		return false, err
	}
	err = lead(leadCtx)
	// From here Resign answers ErrNotHeld: whether it came first is settled.
	e.mu.Lock()
	resigned := tm.resigned
	if e.term == tm {
		e.term = nil
	}
	e.mu.Unlock()
	switch {
	case resigned:
		return true, nil
	case lease.Err() != nil:
		return false, nil // lost: campaign again
	}
	return true, err
}

// leadership is one term of an Election value.
type leadership struct {
	cancel   context.CancelCauseFunc // ends lead's context
	lease    *Lease
	resigned bool // Resign was called; guarded by the Election's mu
	leading  bool // the record is published and lead runs; guarded by mu
}

// Resign ends the current leadership of this Election value, if it leads
// or is taking office (its record may already be announced): lead's
// context is cancelled (or lead never runs), and Run steps down and returns
// nil. It does not wait for lead to return.
func (e *Election[T]) Resign(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.term == nil {
		return ErrNotHeld
	}
	e.term.resigned = true
	e.term.cancel(errResigned)
	return nil
}

// errStaleTerm is a master's answer that a later leader's record is stored.
var errStaleTerm = errors.New("a later leader's record is stored")

// publishOp: election_publish.lua answers 1 when recorded, 0 when a later
// term is stored, -1 when the lock key does not hold our token.
var publishOp = op{name: "publish", script: electionPublish, judge: judgeDone(errStaleTerm, errNotOwner)}

// retractOp: election_retract.lua answers 1 when deleted, 0 when the record
// is someone else's.
var retractOp = op{name: "retract", script: electionRetract, all: true, judge: judgeDone(errOtherOwner, errOtherOwner)}

// leaderReadOp: election_read.lua answers {term, value} when the recorded
// leader still holds the lock on that master, nil otherwise; every answer
// is a yes. The round ends once a quorum agrees on one term, or when every
// master answered.
var leaderReadOp = op{name: "leader", script: electionRead, all: true, keep: true, agree: true, judge: func(val any) (vote, error) {
	if _, ok := leaderTerm(val); ok || val == nil {
		return voteYes, nil
	}
	return voteFailed, unexpected(val)
}}

// leaderTerm parses one master's answer to election_read.lua.
func leaderTerm(val any) (uint64, bool) {
	fields, ok := val.([]any)
	if !ok || len(fields) != 2 {
		return 0, false
	}
	b, _ := fields[0].([]byte)
	term, err := strconv.ParseUint(string(b), 10, 64)
	return term, err == nil
}

func (e *Election[T]) publish(ctx context.Context, lease *Lease, term uint64, data []byte) error {
	t := lease.run(ctx, &publishOp, []any{e.recordKey, e.mutex.nameArg}, strconv.FormatUint(term, 10), data, e.channel)
	return t.err(nil)
}

// retract deletes the record of lease, if it is still the recorded leader,
// on every master. Best effort: a record left behind is ignored by readers
// once its lock is gone.
func (e *Election[T]) retract(ctx context.Context, lease *Lease) {
	lease.run(ctx, &retractOp, []any{e.recordKey}, e.channel)
}

// Leader returns the current leader's value. ok is false when no candidate
// leads: no leader value is held on a quorum of masters together with the
// lock. It returns an error when too few masters answered to tell.
func (e *Election[T]) Leader(ctx context.Context) (value T, ok bool, err error) {
	value, _, ok, err = e.leader(ctx)
	return value, ok, err
}

func (e *Election[T]) leader(ctx context.Context) (value T, term uint64, ok bool, err error) {
	t := e.mutex.run(ctx, &leaderReadOp, e.recordKey, e.mutex.nameArg)
	if i, agreed := t.agreed(); agreed {
		term, _ = leaderTerm(t.vals[i])
		data, _ := t.vals[i].([]any)[1].([]byte)
		value, err = e.codec.Unmarshal(data)
		return value, term, err == nil, err
	}
	if !t.won() {
		return value, 0, false, t.quorumError()
	}
	return value, 0, false, nil
}

// Leadership is one report of Election.Observe: who leads, or that nobody
// does.
type Leadership[T any] struct {
	// Value is the leader's value; the zero T when Vacant.
	Value T
	// Term is the leader's term (its fencing token), or when Vacant the
	// term that ended (0 if none was seen).
	Term uint64
	// Vacant: nobody leads; the last leader resigned or its lease ended.
	Vacant bool
}

// Observe returns a channel that reports who leads: the current state at
// once (a leader, or a vacancy), then each change, in term order: a new
// leader, or a vacancy when the leader resigned or its lease ended. A
// follower can so tell "no leader" from "the same leader". Announcements
// arrive on the Client's subscriber connections (one per master, shared by
// every observer and waiter: observers cost no lock capacity, any number of
// them); a read of the leader every TTL covers announcements that were
// missed or dropped, and vacancies after a leader that died without
// resigning. The channel is closed when ctx ends or the Client is closed,
// after every goroutine of this call has returned. A reader that falls
// behind delays reports; announcements that arrive meanwhile beyond a
// buffer of 64 are dropped and caught up by the next read.
func (e *Election[T]) Observe(ctx context.Context) <-chan Leadership[T] {
	out := make(chan Leadership[T])
	notes := make(chan announcement, 64)
	stop, ok := e.mutex.subscribe(e.channel, func(data []byte) {
		if a, ok := parseAnnouncement(data); ok {
			select {
			case notes <- a:
			default: // full: the next read catches up
			}
		}
	})
	if !ok { // closed
		stop()
		close(out)
		return out
	}
	closed := e.mutex.closed()
	go func() {
		defer close(out)
		defer stop()
		var (
			last     uint64 // the term of the last report
			vacant   bool
			reported bool
		)
		deliver := func(l Leadership[T]) bool {
			switch {
			case !reported:
			case l.Vacant && (vacant || l.Term < last):
				return true // no change
			case !l.Vacant && l.Term <= last:
				return true // not newer
			}
			last, vacant, reported = l.Term, l.Vacant, true
			select {
			case out <- l:
				return true
			case <-ctx.Done():
			case <-closed:
			}
			return false
		}
		poll := func() bool {
			v, term, ok, err := e.leader(ctx)
			switch {
			case err != nil:
				return ctx.Err() == nil // cannot tell now; the next read will
			case !ok:
				return deliver(Leadership[T]{Vacant: true, Term: last})
			}
			return deliver(Leadership[T]{Value: v, Term: term})
		}
		if !poll() {
			return
		}
		ticker := e.mutex.clock().Ticker(e.mutex.cfg.ttl)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-closed:
				return
			case n := <-notes:
				l := Leadership[T]{Term: n.term, Vacant: n.vacant}
				if !n.vacant {
					v, err := e.codec.Unmarshal(n.data)
					if err != nil {
						continue
					}
					l.Value = v
				}
				if !deliver(l) {
					return
				}
			case <-ticker.C:
				if !poll() {
					return
				}
			}
		}
	}()
	return out
}

// announcement is one message on an election's channel: "<term>:<value>"
// when a leader took office, "<term>" when it stepped down.
type announcement struct {
	term   uint64
	data   []byte
	vacant bool
}

func parseAnnouncement(msg []byte) (announcement, bool) {
	term, value, hasValue := bytes.Cut(msg, []byte(":"))
	t, err := strconv.ParseUint(string(term), 10, 64)
	if err != nil {
		return announcement{}, false
	}
	return announcement{term: t, data: value, vacant: !hasValue}, true
}

// Leading reports, without touching the network, whether this Election
// value leads now: Run is calling lead and the lease is held. until is the
// end of the lease's validity as the client computed it (Lease.Until): the
// watchdog moves it forward; a leader whose until comes close is not
// renewing and must be ready to stop.
func (e *Election[T]) Leading() (until time.Time, ok bool) {
	var l *Lease
	e.mu.Lock()
	if e.term != nil && e.term.leading {
		l = e.term.lease
	}
	e.mu.Unlock()
	if l == nil || !l.held() {
		return time.Time{}, false
	}
	return l.Until(), true
}
