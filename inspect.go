package distlock

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"time"
)

// LockStatus is what the masters hold for one lock, as Client.Inspect read
// it.
type LockStatus struct {
	Name string // the lock's name
	// Held: a quorum of masters hold the same token under the lock's key,
	// so the lock is taken (by a Mutex or an RWMutex's writer; an RWMutex
	// held by readers only is not seen, nor are a Slots' slots).
	Held bool
	// Quorum is the number of masters that must agree: masters/2 + 1.
	Quorum  int
	Masters []MasterStatus // one per master, in the Client's order
}

// MasterStatus is what one master holds for a lock.
type MasterStatus struct {
	// Addr is the master's address as given to NewClient, without its
	// password, or "pool[i]".
	Addr string
	// Held: the lock's key exists on this master (a holder's token, maybe
	// not the quorum's).
	Held bool
	// TTL is what is left of the key's time to live; 0 when it is not held,
	// and -1 for a key without expiry (not one this library sets).
	TTL time.Duration
	// Fence is the lock's fencing counter on this master (see Lease.Token),
	// 0 when it has none.
	Fence uint64
	// Err is why the master gave no answer (down, timeout, closed) or
	// failed (the lock's key holds another type of value), or nil.
	Err error
}

// inspectOp reads every master, changing nothing; a master's answer is the
// array of inspect.lua.
var inspectOp = op{name: "inspect", script: inspectScript, all: true, keep: true, judge: func(val any) (vote, error) {
	if a, ok := val.([]any); ok && len(a) == 3 {
		return voteYes, nil
	}
	return voteFailed, unexpected(val)
}}

// Inspect reads, without changing anything, what each master holds for the
// lock called name: whether its key is there, its remaining TTL, and the
// fencing counter. It waits for every master's answer (each bounded by the
// master timeout) or for ctx to end; a master that did not answer has Err
// set. It is for operators (the distlock status command) and tests: by the
// time it returns, the lock may have changed hands. An invalid name is an
// error.
func (c *Client) Inspect(ctx context.Context, name string) (*LockStatus, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if c.closed.Load() {
		return nil, fmt.Errorf("distlock: inspect %q: %w", name, ErrClosed)
	}
	t := newTally(c, &inspectOp, name)
	t.run(ctx, []any{name, derivedKey(kindFence, name)})
	st := &LockStatus{Name: name, Quorum: c.quorum, Masters: make([]MasterStatus, t.n)}
	for i := range t.n {
		ms := &st.Masters[i]
		ms.Addr = c.masters[i].addr
		if t.vote(i) != voteYes {
			ms.Err = t.errOf(i)
			if ms.Err == nil {
				ms.Err = cmp.Or(t.stopped, errNoAnswer)
			}
			continue
		}
		a := t.vals[i].([]any)
		if _, ok := a[0].([]byte); ok {
			ms.Held = true
			if pttl, ok := a[1].(int64); ok {
				ms.TTL = time.Duration(pttl) * time.Millisecond
				if pttl == -1 {
					ms.TTL = -1
				}
			}
		}
		if f, ok := a[2].([]byte); ok {
			ms.Fence, _ = strconv.ParseUint(string(f), 10, 64)
		}
	}
	// Held: a quorum of masters answered the same token (the round
	// engine's rule for agreeing answers).
	_, st.Held = t.agreed()
	return st, nil
}
