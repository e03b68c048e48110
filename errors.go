package distlock

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrNotAcquired is matched by every error that Lock, TryLock and Do return
	// when the lock was not acquired. The same error also matches the reason:
	// ErrLocked, a *QuorumError, or the context's error.
	ErrNotAcquired = errors.New("distlock: lock not acquired")

	// ErrLocked means that another owner holds the lock on at least one master,
	// which kept this acquisition from reaching a quorum.
	ErrLocked = errors.New("distlock: lock held by another owner")

	// ErrNotHeld is returned by Unlock and Extend when the lease is no longer
	// ours: it was already unlocked or lost, it is nil, or a quorum of masters
	// answered that the key expired or holds another owner's token.
	ErrNotHeld = errors.New("distlock: lease not held")

	// ErrLeaseLost is the cause reported by Lease.Err and context.Cause of
	// Lease.Context when the lease ended without Unlock: it could not be kept
	// on a quorum of masters within its validity.
	ErrLeaseLost = errors.New("distlock: lease lost")

	// ErrMaxHold is matched, together with ErrLeaseLost, by the error of a
	// lease that reached its WithMaxHold limit.
	ErrMaxHold = errors.New("distlock: maximum hold time reached")

	// ErrClosed is returned for work submitted to a Client after Close.
	ErrClosed = errors.New("distlock: client closed")

	// ErrMasterDown is the error recorded for a master that is suspected down
	// after a timeout or a connection failure. Requests to it fail at once
	// (they count as "no" votes) until a background probe gets an answer again.
	ErrMasterDown = errors.New("distlock: master suspected down")
)

// errNotOwner is a master's answer that the key no longer holds our token
// (it expired, or holds another owner's). It is kept apart from ErrNotHeld:
// one master's answer is not the lease's fate; a round wraps ErrNotHeld
// around its error only when a majority answered so.
var errNotOwner = errors.New("key expired or held by another owner")

// errNoAnswer names a master that had not answered when its round was
// decided by the others (fast quorum does not wait for it).
var errNoAnswer = errors.New("no answer before the round was decided")

// MasterError is the failure of one request on one master.
type MasterError struct {
	// Addr is the master's address as given to NewClient, without its
	// password, or "pool[i]" for a Client built from pools.
	Addr string
	// Err is what happened there: a network or timeout error, a reply error,
	// ErrLocked, ErrNotHeld or ErrMasterDown.
	Err error
}

func (e *MasterError) Error() string { return e.Addr + ": " + e.Err.Error() }

// Unwrap returns the master's error.
func (e *MasterError) Unwrap() error { return e.Err }

// QuorumError reports a round (acquire, extend or release) that did not get a
// quorum of masters to agree. errors.Is and errors.As reach every master's
// error through it, so errors.Is(err, ErrLocked) or
// errors.Is(err, context.DeadlineExceeded) work as expected.
type QuorumError struct {
	Op      string         // "acquire", "extend" or "release"
	Name    string         // the lock's name
	Agreed  int            // masters that did what was asked
	Needed  int            // the quorum: masters/2 + 1
	Masters int            // the number of masters
	Errors  []*MasterError // one entry for every master that did not agree, in master order
}

func (e *QuorumError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "distlock: %s %q: %d of %d masters agreed, %d needed", e.Op, e.Name, e.Agreed, e.Masters, e.Needed)
	for i, me := range e.Errors {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(me.Error())
	}
	return b.String()
}

// Unwrap returns the masters' errors, so errors.Is and errors.As look inside.
func (e *QuorumError) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, me := range e.Errors {
		errs[i] = me
	}
	return errs
}

// notAcquired wraps why an acquisition failed so that the result matches
// ErrNotAcquired, the cause, and (when not nil) the context's error.
func notAcquired(cause, ctxErr error) error {
	switch {
	case cause == nil && ctxErr == nil:
		return ErrNotAcquired
	case cause == nil:
		return fmt.Errorf("%w: %w", ErrNotAcquired, ctxErr)
	case ctxErr == nil || errors.Is(cause, ctxErr):
		return fmt.Errorf("%w: %w", ErrNotAcquired, cause)
	default:
		return fmt.Errorf("%w: %w (last attempt: %w)", ErrNotAcquired, ctxErr, cause)
	}
}
