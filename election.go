package distlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Election is leader election over the Client's masters with a typed leader
// value (an address, an id): one candidate at a time runs its lead function,
// and followers read or watch who leads. The leader is the holder of the
// election's lock (named like the election); its value is recorded beside
// the lock ("<name>:leader") with its fencing token as the term, and
// announced on the channel "<name>:leader".
//
// An Election is safe for concurrent use; each candidate process calls Run.
type Election[T any] struct {
	mutex     *Mutex
	recordKey string
	channel   string
	codec     Codec[T]

	mu     sync.Mutex
	resign context.CancelCauseFunc // ends the running lead; nil when not leading
}

var errResigned = errors.New("distlock: resigned")

// NewElection returns the election called name. opts configure its lock: the
// TTL bounds how long followers wait after a leader dies without resigning.
// A nil codec means JSONCodec.
func NewElection[T any](c *Client, name string, codec Codec[T], opts ...Option) (*Election[T], error) {
	m, err := c.NewMutex(name, opts...)
	if err != nil {
		return nil, err
	}
	if codec == nil {
		codec = JSONCodec[T]{}
	}
	return &Election[T]{mutex: m, recordKey: name + ":leader", channel: name + ":leader", codec: codec}, nil
}

// Run campaigns until elected, records and announces value as the leader's,
// and calls lead with a context that ends when leadership ends: the lease is
// lost, Resign is called, or ctx ends. When leadership was lost, Run
// campaigns again. It returns when ctx ends (ctx.Err()), after Resign (nil),
// or when lead returns while still leader (lead's error); each time it steps
// down first: it retracts its record and unlocks.
func (e *Election[T]) Run(ctx context.Context, value T, lead func(ctx context.Context) error) error {
	data, err := e.codec.Marshal(value)
	if err != nil {
		return fmt.Errorf("distlock: election %q: encode: %w", e.mutex.name, err)
	}
	for {
		lease, err := e.mutex.Lock(ctx)
		if err != nil {
			return err
		}
		lost, err := e.serve(ctx, lease, data, lead)
		if lost && ctx.Err() == nil {
			continue // campaign again
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
}

// serve leads under lease and steps down. lost reports that leadership
// ended because the lease could not be kept (not by Resign, ctx or lead).
func (e *Election[T]) serve(ctx context.Context, lease *Lease, data []byte, lead func(ctx context.Context) error) (lost bool, err error) {
	defer func() {
		e.retract(context.WithoutCancel(ctx), lease)
		_ = lease.Unlock(context.WithoutCancel(ctx))
	}()
	term, err := lease.Token(ctx)
	if err != nil {
		return lease.Err() != nil, err
	}
	if err := e.publish(ctx, lease, term, data); err != nil {
		return lease.Err() != nil, err
	}

	leadCtx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(lease.Context(), func() { cancel(context.Cause(lease.Context())) })
	e.mu.Lock()
	e.resign = cancel
	e.mu.Unlock()
	err = lead(leadCtx)
	stop()
	e.mu.Lock()
	e.resign = nil
	e.mu.Unlock()
	cause := context.Cause(leadCtx)
	cancel(nil)
	switch {
	case errors.Is(cause, errResigned):
		return false, nil
	case lease.Err() != nil:
		return true, errors.Join(err, lease.Err())
	}
	return false, err
}

// Resign ends the current leadership of this Election value, if it leads:
// lead's context is cancelled, and Run steps down and returns nil. It does
// not wait for lead to return.
func (e *Election[T]) Resign(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.resign == nil {
		return ErrNotHeld
	}
	e.resign(errResigned)
	return nil
}

func (e *Election[T]) publish(ctx context.Context, lease *Lease, term uint64, data []byte) error {
	m := e.mutex
	n, q := len(m.client.masters), m.client.quorum
	replies := m.client.fanout(electionPublish,
		[]any{e.recordKey, m.name, lease.token, strconv.FormatUint(term, 10), data, e.channel}, time.Time{})
	yes, _, _, errs := m.collect(ctx, replies, func(yes, lost, failed int) bool {
		return yes >= q || lost+failed > n-q
	})
	if yes < q {
		return m.quorumError("publish", yes, errs)
	}
	return nil
}

// retract deletes the record of lease, if it is still the recorded leader,
// on every master. Best effort: a record left behind is ignored by readers
// once its lock is gone.
func (e *Election[T]) retract(ctx context.Context, lease *Lease) {
	m := e.mutex
	replies := m.client.fanout(electionRetract, []any{e.recordKey, lease.token}, time.Time{})
	m.collect(ctx, replies, func(yes, lost, failed int) bool { return yes+lost+failed == len(m.client.masters) })
}

// Leader returns the current leader's value. ok is false when no candidate
// leads: no leader value is held on a quorum of masters together with the
// lock. It returns an error when too few masters answered to tell.
func (e *Election[T]) Leader(ctx context.Context) (value T, ok bool, err error) {
	value, _, ok, err = e.leader(ctx)
	return value, ok, err
}

func (e *Election[T]) leader(ctx context.Context) (value T, term uint64, ok bool, err error) {
	m := e.mutex
	c := m.client
	n, q := len(c.masters), c.quorum
	replies := c.fanout(electionRead, []any{e.recordKey, m.name}, time.Time{})
	votes := make(map[uint64]int, 1)
	datas := make(map[uint64][]byte, 1)
	errs := make([]error, n)
	answered, failed := 0, 0
	for answered+failed < n {
		select {
		case r := <-replies:
			if r.err != nil {
				errs[r.idx] = r.err
				failed++
				continue
			}
			answered++
			fields, isArray := r.val.([]any)
			if !isArray || len(fields) != 2 {
				continue // nil: no live leader on this master
			}
			t, _ := fields[0].([]byte)
			term, err := strconv.ParseUint(string(t), 10, 64)
			if err != nil {
				continue
			}
			votes[term]++
			datas[term], _ = fields[1].([]byte)
			if votes[term] >= q {
				v, err := e.codec.Unmarshal(datas[term])
				return v, term, err == nil, err
			}
		case <-ctx.Done():
			return value, 0, false, fmt.Errorf("distlock: election %q: %w", m.name, ctx.Err())
		}
	}
	if answered < q {
		return value, 0, false, m.quorumError("leader", answered, errs)
	}
	return value, 0, false, nil
}

// Observe returns a channel that delivers the leader's value at once if
// there is a leader, then each new leader's value, in the order of their
// terms. Announcements arrive by pub/sub from every master (one subscriber
// connection per master per Observe call); a read of the leader every TTL
// covers announcements that were missed. The channel is closed after ctx
// ends and every goroutine of this call has returned. A slow reader delays
// delivery but misses no leader that was announced while it read.
func (e *Election[T]) Observe(ctx context.Context) <-chan T {
	out := make(chan T)
	notes := make(chan announcement, 64)
	subs := make([]*pubsub, len(e.mutex.client.masters))
	for i, ms := range e.mutex.client.masters {
		subs[i] = startPubSub(ms, func(_ string, data []byte) {
			term, value, ok := bytes.Cut(data, []byte(":"))
			t, err := strconv.ParseUint(string(term), 10, 64)
			if !ok || err != nil {
				return
			}
			select {
			case notes <- announcement{term: t, data: value}:
			case <-ctx.Done():
			}
		})
		subs[i].add(e.channel)
	}
	go func() {
		defer close(out)
		defer func() {
			for _, p := range subs {
				p.close()
			}
		}()
		var last uint64
		deliver := func(term uint64, v T) bool {
			if term <= last {
				return true
			}
			last = term
			select {
			case out <- v:
				return true
			case <-ctx.Done():
				return false
			}
		}
		poll := func() bool {
			v, term, ok, err := e.leader(ctx)
			return !(ok && err == nil) || deliver(term, v)
		}
		if !poll() {
			return
		}
		ticker := e.mutex.client.clock.Ticker(e.mutex.cfg.ttl)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case n := <-notes:
				if v, err := e.codec.Unmarshal(n.data); err == nil && !deliver(n.term, v) {
					return
				}
			case <-ticker.C:
				if !poll() {
					return
				}
			}
		}
	}()
	return out
}

type announcement struct {
	term uint64
	data []byte
}
