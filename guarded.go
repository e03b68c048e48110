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

// Guarded is a value of type T stored on every master beside its lock
// ("<name>:value"), which only the lock's holder writes, fenced by its token.
// It is safe for concurrent use, by many goroutines and processes.
type Guarded[T any] struct {
	mutex    *Mutex
	valueKey string
	codec    Codec[T]
}

// NewGuarded returns the guarded value called name, locked by the Mutex of
// that name with opts. A nil codec means JSONCodec.
func NewGuarded[T any](c *Client, name string, codec Codec[T], opts ...Option) (*Guarded[T], error) {
	m, err := c.NewMutex(name, opts...)
	if err != nil {
		return nil, err
	}
	if codec == nil {
		codec = JSONCodec[T]{}
	}
	return &Guarded[T]{mutex: m, valueKey: name + ":value", codec: codec}, nil
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
	clk := g.mutex.client.clock
	fnErr, endErr := g.mutex.client.withLease(ctx, g.mutex, func(ctx context.Context, lease *Lease) error {
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
			return fmt.Errorf("distlock: guarded %q: encode: %w", g.mutex.name, err)
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
		return zero, token, fmt.Errorf("distlock: guarded %q: decode: %w", g.mutex.name, err)
	}
	return v, token, nil
}

// read returns the copy with the highest token among a quorum of masters.
// Every write reached a quorum, and any two quorums meet, so the newest
// write is among them.
func (g *Guarded[T]) read(ctx context.Context) (uint64, []byte, error) {
	m := g.mutex
	c := m.client
	n, q := len(c.masters), c.quorum
	replies := make(replyChan, n)
	args := []any{g.valueKey, "token", "data"}
	for i, ms := range c.masters {
		ms.submit(&command{name: "HMGET", args: args, idx: i, reply: replies})
	}
	var (
		token   uint64
		data    []byte
		ok, bad int
		errs    = make([]error, n)
	)
	for ok < q && bad <= n-q {
		select {
		case r := <-replies:
			fields, isArray := r.val.([]any)
			if r.err != nil || !isArray || len(fields) != 2 {
				if r.err == nil {
					r.err = fmt.Errorf("unexpected reply %T", r.val)
				}
				errs[r.idx] = r.err
				bad++
				continue
			}
			ok++
			t, _ := fields[0].([]byte)
			if t == nil {
				continue // never written on this master
			}
			v, err := strconv.ParseUint(string(t), 10, 64)
			if err != nil {
				errs[r.idx] = fmt.Errorf("bad token %q", t)
				ok--
				bad++
				continue
			}
			if v > token {
				token = v
				data, _ = fields[1].([]byte)
			}
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("distlock: guarded %q: %w", m.name, ctx.Err())
		}
	}
	if ok < q {
		return 0, nil, m.quorumError("read", ok, errs)
	}
	return token, data, nil
}

// write stores data with token on a quorum of masters.
func (g *Guarded[T]) write(ctx context.Context, token uint64, data []byte) error {
	m := g.mutex
	n, q := len(m.client.masters), m.client.quorum
	replies := m.client.fanout(guardedWriteScript, []any{g.valueKey, strconv.FormatUint(token, 10), data}, time.Time{})
	// guarded_write.lua answers 1 (stored) or 0 (refused), which collect
	// counts as yes and lost.
	yes, refused, _, errs := m.collect(ctx, replies, func(yes, refused, failed int) bool {
		return yes >= q || refused+failed > n-q
	})
	if yes >= q {
		return nil
	}
	for i, err := range errs {
		if errors.Is(err, errNotOwner) {
			errs[i] = ErrFenced
		}
	}
	qe := m.quorumError("write", yes, errs)
	if refused > n-q {
		return fmt.Errorf("%w: %w", ErrFenced, qe)
	}
	return qe
}

// retryTransient runs op until it succeeds, fails for good (anything but a
// *QuorumError, or a lease that is no longer held), or ctx ends.
func retryTransient(ctx context.Context, clk clock.Clock, op func() error) error {
	for {
		err := op()
		var qe *QuorumError
		if err == nil || !errors.As(err, &qe) || errors.Is(err, ErrNotHeld) {
			return err
		}
		if !sleep(ctx, clk, transientRetry) {
			return errors.Join(err, ctx.Err())
		}
	}
}

// transientRetry is the pause between attempts of retryTransient.
const transientRetry = 5 * time.Millisecond
