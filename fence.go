package distlock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Token returns the lease's fencing token: a number strictly greater than the
// token of every earlier holder of the same lock that got one. Pass it to the
// resource the lock protects and have the resource refuse a token lower than
// the highest it has seen: then a holder that was paused past its lease (GC,
// swap, a stopped VM) cannot write after a later holder did. Guarded does this
// for values stored beside the lock.
//
// The first call costs two rounds; later calls return the same token. On each
// master the lock keeps a counter beside its key ("<name>:fence"), incremented
// by every acquisition once it exists. Token reads the counter on the masters
// that still hold this lease's key, takes the highest value a quorum returned,
// and writes it back (counter = max(counter, token)) on a quorum before it
// returns. Any later holder's quorum meets that quorum, and its acquisition
// increments the counter there, so its token is higher. A counter lost to a
// master restart starts again from the server's TIME in microseconds.
//
// Limits: it relies on the lock's own safety (the timing assumptions of
// Redlock), on the masters' clocks not going back across a restart, and on
// fewer than one acquisition per microsecond. Token fails, with an error
// matching ErrNotHeld, if the lease ended before the write-back finished;
// that token must not be used.
func (l *Lease) Token(ctx context.Context) (uint64, error) {
	if l == nil {
		return 0, ErrNotHeld
	}
	l.fenceMu.Lock()
	defer l.fenceMu.Unlock()
	if l.fence != 0 {
		return l.fence, nil
	}
	if l.Err() != nil || l.isReleased() {
		return 0, ErrNotHeld
	}
	m := l.mutex
	token, err := m.readFence(ctx, l.token)
	if err != nil {
		return 0, err
	}
	replies := m.client.fanout(fenceWriteScript, []any{m.nameArg, m.fenceArg, l.token, strconv.FormatUint(token, 10)}, time.Time{})
	n, q := len(m.client.masters), m.client.quorum
	yes, lost, _, errs := m.collect(ctx, replies, func(yes, lost, failed int) bool {
		return yes >= q || lost+failed > n-q
	})
	if yes < q {
		err := m.quorumError("fence", yes, errs)
		if lost > n-q {
			return 0, fmt.Errorf("%w: %w", ErrNotHeld, err)
		}
		return 0, err
	}
	// The token is good only if the lease still held when the write-back
	// finished: a later holder's quorum then meets ours.
	if l.Err() != nil || l.isReleased() || !m.client.clock.Now().Before(l.Until()) {
		return 0, fmt.Errorf("%w: the lease ended before its fencing token was written back", ErrNotHeld)
	}
	l.fence = token
	return token, nil
}

// readFence returns the highest fencing counter over a quorum of masters
// that hold token.
func (m *Mutex) readFence(ctx context.Context, token any) (uint64, error) {
	c := m.client
	n, q := len(c.masters), c.quorum
	replies := c.fanout(fenceReadScript, []any{m.name, m.fenceKey, token}, time.Time{})
	errs := make([]error, n)
	var highest uint64
	yes, no := 0, 0
	for yes < q && no <= n-q {
		select {
		case r := <-replies:
			switch v := r.val.(type) {
			case []byte:
				if r.err == nil {
					t, err := strconv.ParseUint(string(v), 10, 64)
					if err != nil {
						errs[r.idx] = fmt.Errorf("bad fencing counter %q", v)
						no++
						continue
					}
					highest = max(highest, t)
					yes++
					continue
				}
			case int64:
				if r.err == nil {
					errs[r.idx] = errNotOwner
					no++
					continue
				}
			}
			if r.err == nil {
				r.err = fmt.Errorf("unexpected reply %T", r.val)
			}
			errs[r.idx] = r.err
			no++
		case <-ctx.Done():
			return 0, fmt.Errorf("distlock: fence %q: %w", m.name, ctx.Err())
		}
	}
	if yes < q {
		qe := m.quorumError("fence", yes, errs)
		notHeld := 0
		for _, err := range errs {
			if errors.Is(err, errNotOwner) {
				notHeld++
			}
		}
		if notHeld > n-q {
			return 0, fmt.Errorf("%w: %w", ErrNotHeld, qe)
		}
		return 0, qe
	}
	return highest, nil
}
