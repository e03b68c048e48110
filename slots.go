package distlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// MaxSlots bounds the number of values of a Slots (and permits of a
// Semaphore): an Acquire may try every slot in turn.
const MaxSlots = 4096

// Slots is a fixed set of values of type T (API keys, GPU ids, shard
// numbers) shared by every process that uses the same name: each holder
// leases one value at a time, and no value is leased twice at once.
//
// Slot i is a lock of its own, a Mutex with the options of NewSlots (see
// the README's key layout), so the bound holds by construction over any
// number of masters: no two leases of one slot overlap, so no more holders
// than values exist at any moment. (Counting holders per master instead
// would not do: with 3 masters and 2 permits, holders on masters {1,2},
// {2,3} and {1,3} each have a majority.) A slot's lease is a *Lease like a
// Mutex's: renewed by the watchdog, lost, unlocked and fenced (Lease.Token)
// the same way.
//
// A Slots is safe for concurrent use.
type Slots[T any] struct {
	c       *Client
	name    string
	values  []T
	slots   []*Mutex
	channel string // every slot's releases are announced here
	cfg     lockConfig
}

// Semaphore is a counting semaphore: Slots over the permits 0..n-1.
type Semaphore = Slots[int]

// NewSlots returns the slots called name over values (copied), locked with
// opts. Every process must give the same values in the same order: slot i
// is values[i]. It returns an error for an invalid name or option, for no
// values or more than MaxSlots, and ErrClosed after Close; it does not
// touch the masters. The names allowed are those of NewMutex.
func NewSlots[T any](c *Client, name string, values []T, opts ...Option) (*Slots[T], error) {
	cfg, err := c.lockConfig(name, opts)
	if err != nil {
		return nil, err
	}
	if len(values) == 0 || len(values) > MaxSlots {
		return nil, fmt.Errorf("distlock: slots %q: need 1 to %d values, got %d", name, MaxSlots, len(values))
	}
	// The slots' keys are <base>:<i>; base itself is no key, and is the
	// channel where every slot's releases are announced.
	base := derivedKey(kindSlot, name)
	s := &Slots[T]{c: c, name: name, values: append([]T(nil), values...), channel: base, cfg: cfg}
	s.slots = make([]*Mutex, len(values))
	for i := range values {
		m := c.newMutex(name+"["+strconv.Itoa(i)+"]", base+":"+strconv.Itoa(i), s.channel, cfg, &mutexKind)
		m.slot = i
		s.slots[i] = m
	}
	return s, nil
}

// NewSemaphore returns the counting semaphore called name with the given
// number of permits: Slots over 0..permits-1 (see NewSlots).
func NewSemaphore(c *Client, name string, permits int, opts ...Option) (*Semaphore, error) {
	if permits < 1 || permits > MaxSlots {
		return nil, fmt.Errorf("distlock: semaphore %q: need 1 to %d permits, got %d", name, MaxSlots, permits)
	}
	values := make([]int, permits)
	for i := range values {
		values[i] = i
	}
	return NewSlots(c, name, values, opts...)
}

// Name returns the slots' name.
func (s *Slots[T]) Name() string { return s.name }

// Len returns the number of values.
func (s *Slots[T]) Len() int { return len(s.values) }

// Acquire leases a free value, waiting and retrying as Mutex.Lock does while
// every value is leased: each attempt tries the slots one by one, from a
// random one, until one is taken, and a release of any slot wakes the
// waiters. It returns the value and its lease; Lease.Name reports the slot
// as "name[i]". Its errors are those of Mutex.Lock; ErrLocked means every
// slot was held.
func (s *Slots[T]) Acquire(ctx context.Context) (T, *Lease, error) {
	lease, err := s.c.lock(ctx, s, lane{ch: s.channel}, &s.cfg)
	return s.result(lease, err)
}

// TryAcquire tries every slot once, from a random one, and returns the first
// value it leases. When none is free it returns an error matching
// ErrNotAcquired and ErrLocked.
func (s *Slots[T]) TryAcquire(ctx context.Context) (T, *Lease, error) {
	lease, _, err := s.try(ctx, true)
	if err != nil {
		err = notAcquired(err, ctx.Err())
	}
	return s.result(lease, err)
}

// Do leases a value (waiting as Acquire does), runs fn with it, and
// unlocks, as Client.Do does.
func (s *Slots[T]) Do(ctx context.Context, fn func(ctx context.Context, value T) error) error {
	lock := func(ctx context.Context) (*Lease, error) {
		_, lease, err := s.Acquire(ctx)
		return lease, err
	}
	fnErr, endErr := withLease(ctx, lock, func(ctx context.Context, lease *Lease) error {
		return fn(ctx, s.values[lease.mutex.slot])
	})
	return errors.Join(fnErr, endErr)
}

func (s *Slots[T]) result(lease *Lease, err error) (T, *Lease, error) {
	var value T
	if err != nil {
		return value, nil, err
	}
	return s.values[lease.mutex.slot], lease, nil
}

// try makes one attempt on every slot, from a random one (attempt).
func (s *Slots[T]) try(ctx context.Context, _ bool) (*Lease, time.Duration, error) {
	n := len(s.slots)
	first := rand.IntN(n)
	var heldFor time.Duration
	var failure error // the first failure other than a held slot
	for k := range n {
		m := s.slots[(first+k)%n]
		lease, d, err := m.acquire(ctx, nil, false)
		if err == nil {
			return lease, 0, nil
		}
		if ctx.Err() != nil || isFinal(err) {
			return nil, 0, err
		}
		if d > 0 && (heldFor == 0 || d < heldFor) {
			heldFor = d
		}
		if failure == nil && !errors.Is(err, ErrLocked) {
			failure = err
		}
	}
	if failure != nil {
		return nil, heldFor, failure
	}
	return nil, heldFor, fmt.Errorf("%w: all %d slots of %q are held", ErrLocked, n, s.name)
}

func (s *Slots[T]) giveUp() {}

func (s *Slots[T]) lockName() string { return s.name }

// exclusive: the next waiter may take another slot.
func (s *Slots[T]) exclusive() bool { return false }
