package distlock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Token returns the lease's fencing token: a number strictly greater than the
// token of every earlier holder of the same lock that got one. Pass it to the
// resource the lock protects and have the resource refuse a token lower than
// the highest it has seen: then a holder that was paused past its lease (GC,
// swap, a stopped VM) cannot write after a later holder did. Guarded does this
// for values stored beside the lock.
//
// The first call costs two rounds; later calls return the same token. On each
// master the lock keeps a counter beside its key (see the README's key
// layout). Token increments the counter on every master that still holds this
// lease's key (waiting for each, at most the master timeout), takes the
// highest value, and writes it back (counter = max(counter, token)) on a
// quorum before it returns. A later holder's Token reads a quorum of its own,
// which meets that quorum, so its token is higher. Acquiring and releasing
// never touch the counter: a lock that never asks for a token pays nothing for
// it.
//
// Clocks: when at least a quorum (N/2+1) of the masters, among those that
// answered holding the key, have the counter, no clock is used, so a master whose clock is far
// ahead or behind, or whose counter was lost (a restart without persistence,
// eviction), does not matter. Only when fewer than a quorum of them have it
// (the lock's first token; a majority of masters lost the counter since the
// lock's last token; or some lost it while others that kept it are down,
// slow past the master timeout, or fenced) is the token the highest of the
// counters and the masters' clocks (TIME, in microseconds). Then, and only then, strict increase relies on those clocks
// being ahead of every earlier token: it holds when the masters' clocks are
// correct and tokens are fewer than one per microsecond, and it can fail if
// an earlier token was seeded from a clock that was ahead by more than the
// time since then.
//
// A read lease of an RWMutex has none: Token returns an error matching
// errors.ErrUnsupported.
//
// Limits: it relies on the lock's own safety (the timing assumptions of
// Redlock), and on clocks only as said above. Token fails, with an error
// matching ErrNotHeld, if the lease ended before the write-back finished or a
// quorum answered that the lease is no longer ours (the lease is then lost:
// Done closes); that token must not be used. Other failures return a *QuorumError, and Token may be called again.
func (l *Lease) Token(ctx context.Context) (uint64, error) {
	if l == nil {
		return 0, ErrNotHeld
	}
	l.fenceMu.Lock()
	defer l.fenceMu.Unlock()
	if l.fence != 0 {
		return l.fence, nil
	}
	m := l.mutex
	if !m.kind.tokens {
		return 0, fmt.Errorf("distlock: %q: a read lease has no fencing token: %w", m.name, errors.ErrUnsupported)
	}
	if !l.held() {
		return 0, fmt.Errorf("%w: %q: the lease ended", ErrNotHeld, l.mutex.name)
	}
	fenceKey := any(m.fenceKey())
	t := l.run(ctx, &fenceReadOp, []any{m.nameArg, fenceKey})
	if err := l.refusedEnds(t); err != nil {
		return 0, err
	}
	token := fenceToken(t.yesReplies(), m.client.quorum)

	t = l.run(ctx, &fenceWriteOp, []any{m.nameArg, fenceKey}, strconv.FormatUint(token, 10))
	if err := l.refusedEnds(t); err != nil {
		return 0, err
	}
	// The token is good only if the lease still held when the write-back
	// finished: a later holder's quorum then meets ours.
	if !l.held() || !m.client.clock.Now().Before(l.Until()) {
		return 0, fmt.Errorf("%w: %q: the lease ended before its fencing token was written back", ErrNotHeld, m.name)
	}
	l.fence = token
	return token, nil
}

// fenceToken returns the token from fence_read.lua's answers (counters
// after the increment, and "s"-prefixed clock seeds where the counter is
// missing): the highest counter when at least quorum masters have one, so
// that no master's clock matters; otherwise the highest counter or seed.
func fenceToken(replies []any, quorum int) uint64 {
	var counter, seed uint64
	counters := 0
	for _, val := range replies {
		s := string(val.([]byte))
		if rest, ok := strings.CutPrefix(s, "s"); ok {
			n, _ := strconv.ParseUint(rest, 10, 64) // checked by the judge
			seed = max(seed, n)
			continue
		}
		n, _ := strconv.ParseUint(s, 10, 64) // checked by the judge
		counter = max(counter, n)
		counters++
	}
	if counters >= quorum {
		return counter
	}
	return max(counter, seed)
}

// fenceReadOp: fence_read.lua answers the counter as a decimal string, "s"
// and a clock seed when there is none, or -1 when the lock key does not hold
// our token. The round hears every master (each bounded by the master
// timeout): the more counters Token sees, the less it needs a clock.
var fenceReadOp = op{name: "fence", script: fenceReadScript, keep: true, all: true, judge: func(val any) (vote, error) {
	switch v := val.(type) {
	case []byte:
		if _, err := strconv.ParseUint(strings.TrimPrefix(string(v), "s"), 10, 64); err != nil {
			return voteFailed, fmt.Errorf("bad fencing counter %q", v)
		}
		return voteYes, nil
	case int64:
		if v == -1 {
			return voteNo, errNotOwner
		}
	}
	return voteFailed, unexpected(val)
}}

// fenceWriteOp: fence_write.lua answers 1 when the counter is at least the
// token, -1 when the lock key does not hold our token.
var fenceWriteOp = op{name: "fence", script: fenceWriteScript, judge: judgeDone(errNotOwner, errNotOwner)}
