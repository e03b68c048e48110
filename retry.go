package distlock

import (
	"context"
	"errors"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/cenkalti/backoff/v4"
)

// Lock acquires the lock, retrying failed rounds until a round succeeds, ctx
// ends, or the retry policy (see WithRetry) returns backoff.Stop.
//
// While someone else holds the lock, Lock waits for its release to be
// announced (the release script publishes on "<name>:release"; the Client
// keeps one subscriber connection per master) and tries again at once, with
// a short random spread; the policy's delay is only the fallback for a
// holder that dies without releasing or a notice that is lost, and no wait
// outlasts the holder's remaining TTL. Within one Client, waiters for one
// name queue in FIFO order and only the head contends on the masters. A
// Client that has just released a lock that others wait for lets them go
// first for a moment.
//
// On failure it returns an error matching ErrNotAcquired and the last
// round's reason (ErrLocked, a *QuorumError, ErrClosed); if ctx ended, it
// also matches ctx.Err(), so errors.Is(err, context.DeadlineExceeded) tells a
// timeout from a lock that stayed busy. No key of a failed round is left
// behind.
func (m *Mutex) Lock(ctx context.Context) (*Lease, error) {
	var b backoff.BackOff // made at the first failed round
	clk := m.client.clock
	n := m.client.notifier
	var w *waiter // our place in the Client's queue for this name, once we wait
	defer func() {
		if w != nil {
			n.leave(m.name, w)
		}
	}()
	if n.queued(m.name) {
		w = n.join(m.name) // behind this Client's earlier waiters
	}
	var last error // the reason the last complete round failed
	for {
		if w != nil {
			select {
			case <-w.head:
			case <-ctx.Done():
				return nil, notAcquired(last, ctx.Err())
			}
		}
		if w == nil {
			// Just released here while others elsewhere were told: let them in.
			if d := n.yieldFor(m.name); d > 0 && !sleep(ctx, clk, d) {
				return nil, notAcquired(last, ctx.Err())
			}
		}
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
		if errors.Is(err, ErrClosed) {
			return nil, notAcquired(err, nil)
		}
		last = err
		if w == nil && errors.Is(err, ErrLocked) {
			// From now on a release notice wakes us. Subscribing takes a
			// moment: try once more at once, in case the release came first.
			if w = n.join(m.name); w != nil {
				continue
			}
		}
		if b == nil {
			b = m.newBackOff()
		}
		d := b.NextBackOff()
		if d == backoff.Stop {
			return nil, notAcquired(err, nil)
		}
		if heldFor > 0 && heldFor < d {
			d = heldFor
		}
		if !m.wait(ctx, w, d) {
			return nil, notAcquired(err, ctx.Err())
		}
	}
}

// wait sleeps d on the Client's clock, or until a release is announced to w
// (then a short spread, see notifier.spread). It reports false if ctx ended.
func (m *Mutex) wait(ctx context.Context, w *waiter, d time.Duration) bool {
	clk := m.client.clock
	if w == nil {
		return sleep(ctx, clk, d)
	}
	t := clk.Timer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case announced := <-w.wake:
		if !announced {
			return true // released by this Client: the queue already orders us
		}
		return sleep(ctx, clk, m.client.notifier.spread(w))
	case <-ctx.Done():
		return false
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
