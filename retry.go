package distlock

import (
	"context"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/cenkalti/backoff/v4"
)

// wait sleeps d on the Client's clock, or until a release is announced to w
// (then a short spread, see notifier.spread). It reports false if ctx ended
// or Close began.
func (c *Client) wait(ctx context.Context, w *waiter, d time.Duration) bool {
	clk := c.clock
	var wake <-chan bool // nil: no notices
	if w != nil {
		wake = w.wake
	}
	t := clk.Timer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case announced := <-wake:
		if !announced {
			return true // released by this Client: the queue already orders us
		}
		return c.wait(ctx, nil, c.notifier.spread(w))
	case <-ctx.Done():
		return false
	case <-c.done:
		return false
	}
}

// backOff returns a fresh retry policy for one Lock call.
func (cfg *lockConfig) backOff(clk clock.Clock) backoff.BackOff {
	if cfg.newBackOff != nil {
		return cfg.newBackOff()
	}
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(DefaultRetryInitial),
		backoff.WithMaxInterval(DefaultRetryMax),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxElapsedTime(0), // never stop: ctx bounds the wait
		backoff.WithClockProvider(clk),
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
