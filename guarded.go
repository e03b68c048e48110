package distlock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/benbjohnson/clock"
)

// ErrFenced is returned when a quorum of masters refuses a Guarded write
// because the writer no longer holds the lock there (a later holder took it)
// or a later holder's value, with a higher fencing token, is stored: this
// writer's lease ended (perhaps while it was paused) and its write must not
// land.
var ErrFenced = errors.New("distlock: write refused: the lock is a later holder's (fenced)")

// ErrMaybeApplied is matched by a Guarded.Update error after which the
// change may or may not be stored: the write was sent but not confirmed on a
// quorum before the lease or the context ended. Every other Update error
// means the change was not applied.
var ErrMaybeApplied = errors.New("distlock: update may have been applied")

// Guarded is a value of type T stored on every master beside its lock (see
// the README's key layout), which only the lock's holder writes, fenced by
// its token.
// It is safe for concurrent use, by many goroutines and processes.
type Guarded[T any] struct {
	mutex    *Mutex
	valueKey string
	codec    Codec[T]
}

// NewGuarded returns the guarded value called name, locked by the Mutex of
// that name with opts. A nil codec means JSON (encoding/json).
func NewGuarded[T any](c *Client, name string, codec Codec[T], opts ...Option) (*Guarded[T], error) {
	m, err := c.NewMutex(name, opts...)
	if err != nil {
		return nil, err
	}
	if codec == nil {
		codec = jsonCodec[T]{}
	}
	return &Guarded[T]{mutex: m, valueKey: derivedKey(kindValue, name), codec: codec}, nil
}

// Update locks, reads the newest copy from a quorum of the masters where it
// holds the lock (the zero T if none was written), calls fn with a pointer
// to it, writes the result back to a quorum with the lease's fencing token,
// and unlocks. fn's context ends if the lease is lost, and a lease lost by
// the time fn returns writes nothing.
//
// A master stores a write only if the writer holds the lock key there and
// no higher token is stored: once a later holder has the lock (it holds the
// key on a quorum), no earlier holder's write can reach a quorum, whether or
// not the later one has taken its token or written, and none lands where
// the later one reads.
//
// The result says what happened to the change:
//   - nil: the change is stored on a quorum, whatever happens to the lease
//     afterwards (a lock that could not be released expires with its TTL).
//   - an error matching ErrMaybeApplied: the write was sent, but it could
//     not be confirmed on a quorum before the lease or ctx ended; it may be
//     stored (a later Load may or may not see it). When the first write's
//     outcome is unknown (replies lost, only a minority stored it), Update
//     sends the same write again (same token and value: idempotent) for as
//     long as the lease holds, so this error means the lease ended first.
//   - any other error (Lock's, fn's, a write refused everywhere, matching
//     ErrFenced, a failure before the write): the change was not applied.
//
// So a caller that retries after an error that does not match
// ErrMaybeApplied never applies a change twice; after ErrMaybeApplied it
// must check (Load) before retrying a change that is not idempotent. If fn
// panics, Update unlocks and panics again with the same value.
func (g *Guarded[T]) Update(ctx context.Context, fn func(ctx context.Context, v *T) error) error {
	clk := g.mutex.clock()
	fnErr, endErr := g.mutex.withLease(ctx, func(ctx context.Context, lease *Lease) error {
		// Taking the token and reading have no effect that a retry could
		// repeat, so a master that stalls for a moment is waited out (ctx ends
		// if the lease is lost). The write is not retried.
		var token uint64
		if err := retryTransient(ctx, clk, func() (err error) {
			token, err = lease.Token(ctx)
			return err
		}); err != nil {
			return err
		}
		var v T
		if err := retryTransient(ctx, clk, func() (err error) {
			v, err = g.readHeld(ctx, lease)
			return err
		}); err != nil {
			return err
		}
		if err := fn(ctx, &v); err != nil {
			return err
		}
		data, err := g.codec.Marshal(v)
		if err != nil {
			return fmt.Errorf("distlock: guarded %q: encode: %w", g.mutex.Name(), err)
		}
		if err := lease.Err(); err != nil { // lost while fn ran: send nothing
			return fmt.Errorf("distlock: guarded %q: not written: %w", g.mutex.Name(), err)
		}
		if err := ctx.Err(); err != nil { // ctx ended while fn ran: send nothing
			return fmt.Errorf("distlock: guarded %q: not written: %w", g.mutex.Name(), err)
		}
		return g.write(ctx, lease, token, data)
	})
	if fnErr != nil {
		return errors.Join(fnErr, endErr)
	}
	return nil
}

// Load returns the newest copy among a quorum of masters and the fencing
// token it was written with; the zero T and 0 when none was written. Every
// Update that returned nil is at or below it; one that returned
// ErrMaybeApplied may or may not be. It does not lock: the value may change
// right after.
func (g *Guarded[T]) Load(ctx context.Context) (T, uint64, error) {
	var zero T
	token, data, err := g.read(ctx)
	if err != nil {
		return zero, token, err
	}
	v, err := g.decode(token, data)
	return v, token, err
}

// decode returns the value stored with token (the zero T when token is 0:
// never written).
func (g *Guarded[T]) decode(token uint64, data []byte) (T, error) {
	var zero T
	if token == 0 {
		return zero, nil
	}
	v, err := g.codec.Unmarshal(data)
	if err != nil {
		return zero, fmt.Errorf("distlock: guarded %q: decode: %w", g.mutex.Name(), err)
	}
	return v, nil
}

// guardedReadOp reads a Guarded value's token and data on every master.
var guardedReadOp = op{name: "read", cmd: "HMGET", keep: true, judge: func(val any) (vote, error) {
	fields, ok := val.([]any)
	if !ok || len(fields) != 2 {
		return voteFailed, unexpected(val)
	}
	if t, _ := fields[0].([]byte); t != nil {
		if _, err := strconv.ParseUint(string(t), 10, 64); err != nil {
			return voteFailed, fmt.Errorf("bad token %q", t)
		}
	}
	return voteYes, nil
}}

// guardedWriteOp: guarded_write.lua answers 1 when stored, 0 when a higher
// token is stored or counted, -1 when the lock key is not ours there.
var guardedWriteOp = op{name: "write", script: guardedWriteScript, exact: true, judge: judgeDone(ErrFenced, errNotOwner)}

// guardedHeldReadOp: guarded_read.lua answers the value's {token, data}
// where the lock key holds our lease, -1 elsewhere.
var guardedHeldReadOp = op{name: "read", script: guardedReadScript, keep: true, judge: func(val any) (vote, error) {
	if v, ok := val.(int64); ok && v == -1 {
		return voteNo, errNotOwner
	}
	return guardedReadOp.judge(val)
}}

// readHeld returns the newest copy among a quorum of masters where the
// lock key holds lease: no earlier holder's late write is there (see
// guarded_write.lua), and every write that reached a quorum is among them.
func (g *Guarded[T]) readHeld(ctx context.Context, lease *Lease) (T, error) {
	var zero T
	t := lease.run(ctx, &guardedHeldReadOp, []any{g.mutex.nameArg, g.valueKey})
	if err := lease.refusedEnds(t); err != nil {
		return zero, err
	}
	return g.decode(newest(t))
}

// read returns the copy with the highest token among a quorum of masters.
// Every write reached a quorum, and any two quorums meet, so the newest
// write is among them.
func (g *Guarded[T]) read(ctx context.Context) (uint64, []byte, error) {
	t := g.mutex.run(ctx, &guardedReadOp, g.valueKey, "token", "data")
	if err := t.err(nil); err != nil {
		return 0, nil, err
	}
	token, data := newest(t)
	return token, data, nil
}

// newest returns the token and data of the copy with the highest token
// among the yes replies of a read round (0 and nil when none was written).
func newest(t *tally) (token uint64, data []byte) {
	for _, val := range t.yesReplies() {
		fields := val.([]any) // checked by the judge
		b, _ := fields[0].([]byte)
		if b == nil {
			continue // never written on this master
		}
		if n, _ := strconv.ParseUint(string(b), 10, 64); n > token {
			token = n
			data, _ = fields[1].([]byte)
		}
	}
	return token, data
}

// write stores data with token on a quorum of masters, sending the same
// write again while its outcome is unknown and the lease holds (ctx ends
// when it is lost). A quorum that refuses (ErrFenced) or a failure that
// retrying cannot fix ends it at once. The error matches ErrMaybeApplied when
// some master may have stored the value (see Update).
func (g *Guarded[T]) write(ctx context.Context, lease *Lease, token uint64, data []byte) error {
	tok := strconv.FormatUint(token, 10)
	maybe := false
	for {
		t := lease.run(ctx, &guardedWriteOp, []any{g.mutex.nameArg, g.valueKey}, tok, data)
		if t.won() {
			return nil
		}
		maybe = maybe || t.maybeApplied()
		err := t.err(ErrFenced)
		if t.refused() {
			// The lock is not ours on a quorum any more: the lease is lost,
			// as the watchdog would find.
			lease.mutex.client.renewer.lose(lease.w, err)
		}
		if t.refused() || isFinal(err) || lease.Err() != nil || !sleep(ctx, g.mutex.clock(), transientRetry) {
			if maybe {
				return fmt.Errorf("%w: %w", ErrMaybeApplied, err)
			}
			return err
		}
	}
}

// retryTransient runs op until it succeeds, fails for good (anything but a
// *QuorumError, a lease that is no longer held, or failures that retrying
// cannot fix), or ctx ends.
func retryTransient(ctx context.Context, clk clock.Clock, op func() error) error {
	for {
		err := op()
		var qe *QuorumError
		if err == nil || !errors.As(err, &qe) || errors.Is(err, ErrNotHeld) || isFinal(err) {
			return err
		}
		if !sleep(ctx, clk, transientRetry) {
			return errors.Join(err, ctx.Err())
		}
	}
}

// transientRetry is the pause between attempts of retryTransient.
const transientRetry = 5 * time.Millisecond
