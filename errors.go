package distlock

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gomodule/redigo/redis"
)

var (
	// ErrNotAcquired is matched by every error that Lock, TryLock and Do return
	// when the lock was not acquired. The same error also matches the reason:
	// ErrLocked, a *QuorumError, ErrPermanent, ErrNoValidity, ErrClosed, or the
	// context's error.
	ErrNotAcquired = errors.New("distlock: lock not acquired")

	// ErrLocked means that another owner holds the lock on at least one master,
	// which kept this acquisition from reaching a quorum.
	ErrLocked = errors.New("distlock: lock held by another owner")

	// ErrNotHeld is returned by Unlock, Extend and Token when the lease is no
	// longer ours: it was already unlocked or lost, it is nil, or a quorum of
	// masters answered that the key expired or holds another owner's token.
	ErrNotHeld = errors.New("distlock: lease not held")

	// ErrLeaseLost is the cause reported by Lease.Err and context.Cause of
	// Lease.Context when the lease ended without Unlock: it could not be kept
	// on a quorum of masters within its validity, or Client.Close ended it.
	ErrLeaseLost = errors.New("distlock: lease lost")

	// ErrMaxHold is matched, together with ErrLeaseLost, by the error of a
	// lease that reached its WithMaxHold limit.
	ErrMaxHold = errors.New("distlock: maximum hold time reached")

	// ErrNoValidity is matched by the error of an acquire or extend round that
	// reached a quorum but took so long that no validity was left (the round
	// took longer than the TTL minus the drift). Its keys are released again.
	ErrNoValidity = errors.New("distlock: quorum reached too late: no validity left")

	// ErrPermanent is matched by a master's failure that retrying cannot fix:
	// the server refused the credentials or the command (WRONGPASS, NOAUTH,
	// NOPERM, AUTH without a password configured, an unknown command, scripts
	// that cannot be loaded), the database index is out of range, the key
	// lives elsewhere (CROSSSLOT, MOVED, ASK), the lock key holds another type
	// (WRONGTYPE), the master is a read-only replica (READONLY), or a script
	// failed. Every other failure is transient and retried: refused or reset
	// connections, timeouts, and every other error reply (LOADING, BUSY,
	// MASTERDOWN, TRYAGAIN, CLUSTERDOWN, OOM, MISCONF, NOREPLICAS, "max
	// number of clients reached", ...). When permanent failures alone leave
	// no quorum possible, Lock, Do and the typed layers stop at once; while a
	// quorum is still possible they go on, and the refusing master is named in
	// every *QuorumError.
	ErrPermanent = errors.New("distlock: permanent failure")

	// ErrClosed is returned for work submitted to a Client after Close, and is
	// matched by the loss of every lease that Close ended.
	ErrClosed = errors.New("distlock: client closed")

	// ErrMasterDown is the error recorded for a master that is suspected down
	// after a timeout or a connection failure. Requests to it fail at once
	// (they count as "no" votes) until a background probe gets an answer again.
	// The failure that caused it is wrapped as well.
	ErrMasterDown = errors.New("distlock: master suspected down")
)

// A master's answers that the key no longer holds our token. They are kept
// apart from ErrNotHeld: one master's answer is not the lease's fate; a
// round wraps ErrNotHeld around its error only when a majority answered so.
var (
	errMissing    = errors.New("key expired or deleted")
	errOtherOwner = errors.New("key held by another owner")
	errNotOwner   = errors.New("key expired or held by another owner")
)

// errNoAnswer names a master that had not answered when its round was
// decided by the others (fast quorum does not wait for it).
var errNoAnswer = errors.New("no answer before the round was decided")

// errNoAnswerByDeadline names a master that had not answered a renewal when
// the lease reached its safety deadline.
var errNoAnswerByDeadline = errors.New("no answer before the lease's safety deadline")

// errNotSent marks a command failed before it was sent: the master was
// already suspected down. Its message is the cause's.
var errNotSent = errors.New("not sent")

// notSentError is a failure before sending; errors.Is(err, errNotSent).
type notSentError struct{ err error }

func (e notSentError) Error() string        { return e.err.Error() }
func (e notSentError) Unwrap() error        { return e.err }
func (e notSentError) Is(target error) bool { return target == errNotSent }

// MasterError is the failure of one request on one master.
type MasterError struct {
	// Addr is the master's address as given to NewClient, without its
	// password, or "pool[i]" for a Client built from pools.
	Addr string
	// Err is what happened there: a network or timeout error, a reply error
	// (wrapped with ErrPermanent when retrying cannot fix it), ErrLocked,
	// ErrFenced, ErrMasterDown, ErrClosed, or the context's error.
	Err error
}

func (e *MasterError) Error() string { return e.Addr + ": " + e.Err.Error() }

// Unwrap returns the master's error.
func (e *MasterError) Unwrap() error { return e.Err }

// QuorumError reports a round that did not get a quorum of masters to agree.
// It has an entry for every master that did not agree, including those that
// had not answered when the round was decided. errors.Is and errors.As reach
// every master's error through it, so errors.Is(err, ErrLocked) or
// errors.Is(err, context.DeadlineExceeded) work as expected.
type QuorumError struct {
	// Op is the round: "acquire", "extend" and "release" (Lock, TryLock,
	// Extend, the watchdog, Unlock), "fence" (Lease.Token), "read" and
	// "write" (Guarded), "publish" and "leader" (Election).
	Op      string
	Name    string         // the lock's name
	Agreed  int            // masters that did what was asked
	Needed  int            // the quorum: masters/2 + 1
	Masters int            // the number of masters
	Errors  []*MasterError // one entry for every master that did not agree, in master order

	final bool // permanent failures left no quorum possible: retrying cannot help
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

// permanentReplies are the starts of the error replies that retrying cannot
// fix (see ErrPermanent); every other error reply is transient.
var permanentReplies = []string{
	"WRONGPASS", "NOAUTH", "NOPERM", "CROSSSLOT", "MOVED ", "ASK ", "WRONGTYPE", "READONLY",
	"ERR DB index", "ERR invalid DB index", "ERR invalid password", "ERR AUTH", "ERR Client sent AUTH",
	"ERR unknown command", "ERR user_script", "ERR Error running script", "ERR Error compiling script",
	"ERR value is not an integer", // a fencing counter or Guarded token that is not a number
}

// classifyErr returns err, wrapped with ErrPermanent when it is an error reply
// that retrying cannot fix. Network failures, timeouts, the library's own
// errors and every other error reply are transient.
func classifyErr(err error) error {
	var re redis.Error
	if err == nil || errors.Is(err, ErrPermanent) || !errors.As(err, &re) {
		return err
	}
	msg := string(re)
	if strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "ASK ") {
		return fmt.Errorf("%w: %w (the master is a Redis Cluster of several nodes: give its address to NewClient, which routes each name to the node that owns its slot; a pool given to NewClientFromPools reaches one node)", ErrPermanent, err)
	}
	for _, p := range permanentReplies {
		if strings.HasPrefix(msg, p) { // errors raised in a script keep the command's prefix
			return fmt.Errorf("%w: %w", ErrPermanent, err)
		}
	}
	return err
}
