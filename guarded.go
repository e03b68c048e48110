package distlock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/benbjohnson/clock"
)

// ErrFenced is returned when a write is refused because a later holder of
// the lock, with a higher fencing token, already wrote: this writer's lease
// ended (perhaps while it was paused) and its write must not land.
var ErrFenced = errors.New("distlock: write refused: a later lock holder already wrote (fenced)")

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

// Update locks, reads the newest copy from a quorum of masters (the zero T if
// none was written), calls fn with a pointer to it, writes the result back to
// a quorum with the lease's fencing token, and unlocks. fn's context ends if
// the lease is lost. If fn fails, nothing is written and fn's error is
// returned. Each master refuses a write whose token is lower than the one it
// stores: if a quorum refuses, Update returns an error matching ErrFenced; if
// the write otherwise misses a quorum, a *QuorumError. Either way the caller
// is told that the value may not be stored. Once the write reached a
// quorum, Update returns nil: the value is stored, whatever happens to the
// lease afterwards (a lock that could not be released expires with its TTL),
// so a caller that retries on error never applies a change twice.
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
			v, _, err = g.Load(ctx)
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
		return g.write(ctx, token, data)
	})
	if fnErr != nil {
		return errors.Join(fnErr, endErr)
	}
	return nil
}

// Load returns the newest value stored on a quorum of masters and the
// fencing token it was written with; the zero T and 0 when none was written.
// It does not lock: the value may change right after.
func (g *Guarded[T]) Load(ctx context.Context) (T, uint64, error) {
	var zero T
	token, data, err := g.read(ctx)
	if err != nil || token == 0 {
		return zero, token, err
	}
	v, err := g.codec.Unmarshal(data)
	if err != nil {
		return zero, token, fmt.Errorf("distlock: guarded %q: decode: %w", g.mutex.Name(), err)
	}
	return v, token, nil
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

// guardedWriteOp: guarded_write.lua answers 1 when stored, 0 when refused.
var guardedWriteOp = op{name: "write", script: guardedWriteScript, judge: judgeDone(ErrFenced, ErrFenced)}

// read returns the copy with the highest token among a quorum of masters.
// Every write reached a quorum, and any two quorums meet, so the newest
// write is among them.
func (g *Guarded[T]) read(ctx context.Context) (uint64, []byte, error) {
	t := g.mutex.run(ctx, &guardedReadOp, g.valueKey, "token", "data")
	if err := t.err(nil); err != nil {
		return 0, nil, err
	}
	var (
		token uint64
		data  []byte
	)
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
	return token, data, nil
}

// write stores data with token on a quorum of masters. Each master refuses
// a token lower than the one it stores: if a quorum refuses, the error
// matches ErrFenced.
func (g *Guarded[T]) write(ctx context.Context, token uint64, data []byte) error {
	t := g.mutex.run(ctx, &guardedWriteOp, g.valueKey, strconv.FormatUint(token, 10), data)
	return t.err(ErrFenced)
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
