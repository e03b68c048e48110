package distlock

import (
	"context"
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
// and validity rules of acquire, and Until moves forward. A failed extension
// is retried until the safety deadline Until minus the margin (see
// WithRenewalMargin); a quorum answering that the key is gone or another
// owner's ends it at once. Either way the lease is lost: Done closes and
// Context is cancelled with a cause matching ErrLeaseLost, before any other
// client could acquire the lock, as long as the clocks keep to the drift
// allowance. It is NOT safe to assume the lock is still held after Done
// closed or after Until; a holder that watches Done never overlaps the next.
//
// A Lease is safe for concurrent use. A second Unlock, and Unlock or Extend
// on a nil or ended Lease, return ErrNotHeld and never panic.
type Lease struct {
	mutex *Mutex
	token any // the acquisition's token: a string, boxed once

	mu       sync.Mutex
	until    time.Time
	ended    bool  // Done is (or will be, when made) closed
	released bool  // Unlock was called
	err      error // why it ended: nil after Unlock, ErrLeaseLost when lost
	done     chan struct{}
	ctx      context.Context
	cancel   context.CancelCauseFunc

	watch *watch // the watchdog's state (&wd once registered); guarded by the Client's renewer
	wd    watch

	fenceMu sync.Mutex // serializes Token
	fence   uint64     // the fencing token, once handed out
}

var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// newLease returns a held lease and hands it to the Client's watchdog.
func newLease(m *Mutex, token any, until time.Time) *Lease {
	l := &Lease{mutex: m, token: token, until: until}
	m.client.renewer.add(l)
	return l
}

// Name returns the name of the lock this lease holds.
func (l *Lease) Name() string { return l.mutex.name }

// Until returns the end of the lease's validity as this client computed it:
// the start of the last successful acquire or extend round, plus the TTL,
// minus the drift. Extensions move it forward.
func (l *Lease) Until() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until
}

// Done returns a channel that is closed when the lease ends: at Unlock, or
// when it is lost.
func (l *Lease) Done() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done == nil {
		if l.ended {
			return closedChan
		}
		l.done = make(chan struct{})
	}
	return l.done
}

// Context returns a context that is cancelled when the lease ends, at the
// same moment Done is closed. Its cause (context.Cause) is the lease's error
// when it was lost, and context.Canceled after Unlock.
func (l *Lease) Context() context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx == nil {
		l.ctx, l.cancel = context.WithCancelCause(context.Background())
		if l.ended {
			l.cancel(l.err)
		}
	}
	return l.ctx
}

func (l *Lease) isReleased() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.released
}

// Err returns nil while the lease is held and after a clean Unlock, and an
// error matching ErrLeaseLost once it was lost.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// end marks the lease ended with err (nil for Unlock) and signals Done and
// Context. It reports false if the lease had already ended.
func (l *Lease) end(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return false
	}
	l.ended, l.err = true, err
	if l.done != nil {
		close(l.done)
	}
	if l.cancel != nil {
		l.cancel(err)
	}
	return true
}

// endLost ends the lease as lost for reason.
func (l *Lease) endLost(reason error) bool {
	return l.end(fmt.Errorf("%w: %q: %w", ErrLeaseLost, l.mutex.name, reason))
}

func (l *Lease) setUntil(until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ended && until.After(l.until) {
		l.until = until
	}
}

// Unlock ends the lease and deletes the lock's key on every master where it
// still holds this lease's token (never another owner's key). Done is closed
// before the release is sent.
//
// It returns nil when a quorum of masters confirmed that our token is gone
// (deleted now, or no longer there); ErrNotHeld when the lease had already
// been unlocked or lost, or when our token was missing on a majority;
// otherwise a *QuorumError (the keys that could not be deleted expire with
// their TTL, and a master that was down gets the release again when it
// answers). The release goes
// out even if ctx is already done; ctx bounds only the wait for answers.
func (l *Lease) Unlock(ctx context.Context) error {
	if l == nil {
		return ErrNotHeld
	}
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return ErrNotHeld
	}
	l.released = true
	wasLost := l.ended
	l.mu.Unlock()
	// Stop the watchdog first: after this, no extension of this lease is
	// sent, and any sent before runs before the release on every master.
	l.mutex.client.renewer.remove(l)
	l.end(nil)

	err := l.mutex.release(ctx, l.token)
	if wasLost && err == nil {
		return ErrNotHeld
	}
	return err
}

// Extend resets the lock's TTL on every master that still holds this
// lease's token and, when a quorum did so within the validity, moves Until
// to the start of this round plus TTL minus drift.
//
// When a quorum answers that the key expired or holds another owner's token,
// the lease is lost (Done closes) and Extend returns an error matching
// ErrNotHeld. Other failures (timeouts, masters down) return a *QuorumError
// and leave the lease as it was, valid until Until.
func (l *Lease) Extend(ctx context.Context) error {
	if l == nil {
		return ErrNotHeld
	}
	l.mu.Lock()
	ended := l.ended
	l.mu.Unlock()
	if ended {
		return ErrNotHeld
	}
	until, notOurs, err := l.mutex.extend(ctx, l.token)
	if err != nil {
		if notOurs {
			l.mutex.client.renewer.loseLease(l, err)
		}
		return err
	}
	l.setUntil(until)
	l.mutex.client.renewer.extended(l, until)
	if l.Err() != nil || l.isReleased() {
		return ErrNotHeld
	}
	return nil
}
