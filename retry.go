package distlock

import (
	"context"
	"errors"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/cenkalti/backoff/v4"
)

// Lock acquires the lock, retrying failed rounds after the delays of the
// retry policy (see WithRetry) until a round succeeds, ctx ends, or the
// policy returns backoff.Stop. A wait never sleeps past the moment the
// holder's keys expire.
//
// On failure it returns an error matching ErrNotAcquired and the last
// round's reason (ErrLocked, a *QuorumError); if ctx ended, it also matches
// ctx.Err(), so errors.Is(err, context.DeadlineExceeded) tells a timeout from
// a lock that stayed busy. No key of a failed round is left behind.
func (m *Mutex) Lock(ctx context.Context) (*Lease, error) {
	b := m.newBackOff()
	clk := m.client.clock
	var last error // the reason the last complete round failed
	for {
		lease, heldFor, err := m.acquire(ctx)
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
		last = err
		d := b.NextBackOff()
		if d == backoff.Stop {
			return nil, notAcquired(err, nil)
		}
		if heldFor > 0 && heldFor < d {
			d = heldFor
		}
		if !sleep(ctx, clk, d) {
			return nil, notAcquired(err, ctx.Err())
		}
	}
}

// newBackOff returns a fresh policy for one Lock call.
func (m *Mutex) newBackOff() backoff.BackOff {
	if m.cfg.newBackOff != nil {
		return m.cfg.newBackOff()
	}
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(DefaultRetryInitial),
		backoff.WithMaxInterval(DefaultRetryMax),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxElapsedTime(0), // never stop: ctx bounds the wait
		backoff.WithClockProvider(m.client.clock),
	)
}

// sleep waits d on clk, or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, clk clock.Clock, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := clk.Timer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
