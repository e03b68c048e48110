package distlock

import (
	"context"
	"fmt"
	"time"
)

// extend runs one extend round for token. It returns the new end of
// validity, or an error; notOurs reports that a quorum answered that the key
// is gone or belongs to someone else, which no retry can mend.
func (m *Mutex) extend(ctx context.Context, token any) (until time.Time, notOurs bool, err error) {
	c := m.client
	n, q := len(c.masters), c.quorum
	t0 := c.clock.Now()
	replies := c.fanout(extendScript, []any{m.nameArg, token, m.ttlArg}, time.Time{})
	yes, lost, _, errs := m.collect(ctx, replies, func(yes, lost, failed int) bool {
		return yes >= q || lost+failed > n-q
	})
	until = t0.Add(m.cfg.ttl - m.cfg.drift())
	switch {
	case yes >= q && c.clock.Now().Before(until):
		return until, false, nil
	case yes >= q:
		return time.Time{}, false, fmt.Errorf("distlock: extend %q: a quorum agreed but the round took %v, leaving no validity", m.name, c.clock.Since(t0))
	}
	if lost > n-q {
		return time.Time{}, true, fmt.Errorf("%w: %w", ErrNotHeld, m.quorumError("extend", yes, errs))
	}
	return time.Time{}, false, m.quorumError("extend", yes, errs)
}

// release runs one release round for token and reports whether a quorum
// confirmed it (see Lease.Unlock for the results).
func (m *Mutex) release(ctx context.Context, token any) error {
	c := m.client
	n, q := len(c.masters), c.quorum
	// A master that is down gets the release again when it answers, for as
	// long as the key could still exist there.
	replies := c.fanout(releaseScript, []any{m.nameArg, token, m.channelArg, c.idArg}, time.Now().Add(m.cfg.ttl))
	// Our token is gone from a master when the release deleted it (yes) or
	// it was not there (lost: expired, or never set by a fast-quorum acquire).
	yes, lost, _, errs, top := m.collectTop(ctx, replies, func(yes, lost, failed int) bool {
		return yes >= q || lost > n-q || yes+lost+failed == n
	})
	if yes > 0 {
		// Wake this Client's next waiter at once; and if the release was
		// announced to subscribers, give them the first go at the lock.
		c.notifier.released(m.name)
		if top > replyDone {
			c.notifier.yield(m.name)
		}
	}
	switch {
	case lost > n-q:
		return ErrNotHeld // not held on a quorum when Unlock came
	case yes+lost >= q:
		return nil
	}
	return m.quorumError("release", yes, errs)
}

// collect reads the replies of an extend or release round until done says
// the outcome is decided or ctx ends. It counts masters that did it (yes),
// that no longer hold our token (lost: the key is gone or another's), and
// that failed; errs[i] is master i's error, or nil if it said yes.
//
// A script's "done" reply is 1, or more for release.lua (1 + the number of
// subscribers its announcement reached); top is the highest reply seen.
func (m *Mutex) collect(ctx context.Context, replies replyChan, done func(yes, lost, failed int) bool) (yes, lost, failed int, errs []error) {
	yes, lost, failed, errs, _ = m.collectTop(ctx, replies, done)
	return yes, lost, failed, errs
}

func (m *Mutex) collectTop(ctx context.Context, replies replyChan, done func(yes, lost, failed int) bool) (yes, lost, failed int, errs []error, top int64) {
	n := len(m.client.masters)
	// Kept on the stack: a round that succeeds returns no errors and
	// allocates nothing here.
	var errBuf [8]error
	var ansBuf [8]bool
	var local []error
	var answered []bool
	if n <= len(errBuf) {
		local, answered = errBuf[:n], ansBuf[:n]
	} else {
		local, answered = make([]error, n), make([]bool, n)
	}
	var unanswered error
	for !done(yes, lost, failed) {
		select {
		case r := <-replies:
			answered[r.idx] = true
			v, ok := r.val.(int64)
			switch {
			case r.err != nil:
				local[r.idx] = r.err
				failed++
			case ok && v >= replyDone:
				yes++
				top = max(top, v)
			case ok && (v == replyMissing || v == replyNotOwner):
				local[r.idx] = errNotOwner
				lost++
			default:
				local[r.idx] = fmt.Errorf("unexpected reply %v", r.val)
				failed++
			}
			continue
		case <-ctx.Done():
			unanswered = ctx.Err()
		}
		break
	}
	if failed+lost == 0 && unanswered == nil {
		return yes, lost, failed, nil, top // decided by yes answers: nothing to report
	}
	if unanswered == nil {
		unanswered = errNoAnswer
	}
	errs = make([]error, n)
	for i := range errs {
		errs[i] = local[i]
		if !answered[i] {
			errs[i] = unanswered
		}
	}
	return yes, lost, failed, errs, top
}
