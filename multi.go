package distlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// MultiMutex locks several names as one: all of them or none. Each name is
// a Mutex with the options of NewMultiMutex, and its key is the name
// itself, so a MultiMutex excludes, and is excluded by, a Mutex of any of
// its names.
//
// The names are taken one at a time in one global order (sorted by bytes),
// whoever asks and in whatever order they were given: two callers locking
// overlapping sets never each hold a name the other waits for, so they
// cannot deadlock. The names may live in different Redis Cluster slots.
//
// A MultiMutex is safe for concurrent use.
type MultiMutex struct {
	names   []string
	mutexes []*Mutex
}

// NewMultiMutex returns the lock over names (in any order; a name given
// twice counts once), each locked with opts. It returns an error for no
// names, for an invalid name (see NewMutex) or option, and ErrClosed after
// Close; it does not touch the masters.
func (c *Client) NewMultiMutex(names []string, opts ...Option) (*MultiMutex, error) {
	if len(names) == 0 {
		return nil, errors.New("distlock: NewMultiMutex: no names")
	}
	sorted := slices.Compact(slices.Sorted(slices.Values(names)))
	mm := &MultiMutex{names: sorted, mutexes: make([]*Mutex, len(sorted))}
	for i, name := range sorted {
		m, err := c.NewMutex(name, opts...)
		if err != nil {
			return nil, err
		}
		mm.mutexes[i] = m
	}
	return mm, nil
}

// Names returns the names, in the order they are locked.
func (mm *MultiMutex) Names() []string { return slices.Clone(mm.names) }

// Lock locks every name in order, each as Mutex.Lock does (waiting while it
// is held), and returns them as one lease. If a name cannot be locked, or a
// lease taken earlier in the call was lost meanwhile, it unlocks those it
// took and returns an error matching ErrNotAcquired and the reason, naming
// the name: the call holds none of the names afterwards, WithMinHold
// notwithstanding (a release that a master does not confirm expires with
// the TTL). ctx bounds the whole call.
func (mm *MultiMutex) Lock(ctx context.Context) (*MultiLease, error) {
	return mm.lock(ctx, (*Mutex).Lock)
}

// TryLock tries each name once, in order, as Mutex.TryLock does, and
// returns them as one lease; if one fails, it unlocks those it took and
// returns an error as Lock does.
func (mm *MultiMutex) TryLock(ctx context.Context) (*MultiLease, error) {
	return mm.lock(ctx, (*Mutex).TryLock)
}

// Do locks every name (as Lock does), runs fn, and unlocks, as Client.Do
// does.
func (mm *MultiMutex) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	fnErr, endErr := withLease(ctx, mm.Lock, func(ctx context.Context, _ *MultiLease) error { return fn(ctx) })
	return errors.Join(fnErr, endErr)
}

func (mm *MultiMutex) lock(ctx context.Context, lock func(*Mutex, context.Context) (*Lease, error)) (*MultiLease, error) {
	// Close waits for the call (each Lock in it ends when Close begins), so
	// that what a failed call gives back reaches the masters.
	c := mm.mutexes[0].client
	c.active.Add(1)
	defer c.active.Add(-1)
	ml := &MultiLease{leases: make([]*Lease, 0, len(mm.mutexes))}
	for _, m := range mm.mutexes {
		lease, err := lock(m, ctx)
		if err == nil {
			ml.leases = append(ml.leases, lease)
			continue
		}
		ml.unlockAll(context.WithoutCancel(ctx), false)
		return nil, fmt.Errorf("%w (name %q; the names taken before it were released)", err, m.name)
	}
	// A lease taken first may have been lost while a later name was awaited.
	for _, l := range ml.leases {
		if err := l.Err(); err != nil {
			ml.unlockAll(context.WithoutCancel(ctx), false)
			return nil, notAcquired(fmt.Errorf("%w (while the later names were locked)", err), nil)
		}
	}
	for _, l := range ml.leases {
		l.join(ml)
	}
	return ml, nil
}

// MultiLease is one holding of a MultiMutex: a lease on each name. It is
// held until Unlock, or until the lease of any one name is lost: then Done
// closes and Err reports that loss. The other names stay held (and renewed)
// until Unlock, which the holder calls as for any lease.
//
// A MultiLease is safe for concurrent use.
type MultiLease struct {
	leases []*Lease

	mu       sync.Mutex // guards the fields below
	released bool
	ending
}

// Leases returns the lease of each name, in the order of Names: for each
// name's Until and fencing Token. Unlock the MultiLease, not its parts: a
// part unlocked on its own ends the MultiLease (Err matches ErrNotHeld).
func (ml *MultiLease) Leases() []*Lease { return slices.Clone(ml.leases) }

// Done returns a channel that is closed when the lease ends: at Unlock, or
// when the lease of any name is lost.
func (ml *MultiLease) Done() <-chan struct{} {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.doneChan()
}

// Context returns a context that is cancelled when the lease ends, at the
// same moment Done is closed; its cause is Err when a name's lease was
// lost, and context.Canceled after Unlock.
func (ml *MultiLease) Context() context.Context {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.context()
}

// Err returns nil while every name's lease is held and after a clean Unlock,
// and the first name's loss (matching ErrLeaseLost) once one was lost.
func (ml *MultiLease) Err() error {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.err
}

// Unlock ends the lease and unlocks every name (see Lease.Unlock), even if
// ctx has ended; ctx bounds only the wait for answers. It returns nil when
// every name was released, and otherwise the errors of the names that were
// not, joined (those lost before match ErrNotHeld). A second Unlock returns
// an error matching ErrNotHeld.
func (ml *MultiLease) Unlock(ctx context.Context) error {
	if ml == nil {
		return ErrNotHeld
	}
	ml.mu.Lock()
	if ml.released {
		ml.mu.Unlock()
		return fmt.Errorf("%w: already unlocked", ErrNotHeld)
	}
	ml.released = true
	ml.mu.Unlock()
	ml.end(nil)
	return ml.unlockAll(ctx, true)
}

// unlockAll unlocks every name's lease, the last taken first; minHold false
// releases them even within the minimum hold (a failed call holds none).
func (ml *MultiLease) unlockAll(ctx context.Context, minHold bool) error {
	var errs []error
	for i := len(ml.leases) - 1; i >= 0; i-- {
		if err := ml.leases[i].unlock(ctx, minHold); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// end ends the lease with err (nil for Unlock), once.
func (ml *MultiLease) end(err error) {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	ml.ending.end(err)
}
