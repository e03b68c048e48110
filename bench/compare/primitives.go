package main

import (
	"context"
	"fmt"

	"github.com/distlock/distlock"
)

// S5 compares distlock's own primitives, uncontended, with its plain Mutex
// in one run: a Semaphore's acquire/release (all goroutines share one, with
// more permits than goroutines), RWMutex read cycles (all goroutines read
// one lock at once), and RWMutex write cycles (each goroutine on its own).

// primitive is a locker over one distlock primitive.
type primitive struct {
	c    *distlock.Client
	lock func(ctx context.Context, key string) (func() error, error)
}

func (p *primitive) close() { p.c.Close() }

type primitiveLocker struct{ *primitive }

func (l primitiveLocker) lock(ctx context.Context, key string) (func() error, error) {
	return l.primitive.lock(ctx, key)
}

// primitives are the S5 rows: name, and how to build the locker.
var primitives = []struct {
	name  string
	note  string
	build func(addrs []string, goroutines int) (locker, error)
}{
	{"Mutex", "own key per goroutine", func(addrs []string, _ int) (locker, error) { return newDistlock(addrs, false) }},
	{"Semaphore", "one, 2×goroutines permits, shared", func(addrs []string, g int) (locker, error) {
		c, err := distlock.NewClient(addrs, distlock.WithoutRestartFence()) // masters the harness just started, empty
		if err != nil {
			return nil, err
		}
		sem, err := distlock.NewSemaphore(c, "compare:s5:sem", 2*g)
		if err != nil {
			return nil, err
		}
		return primitiveLocker{&primitive{c: c, lock: func(ctx context.Context, _ string) (func() error, error) {
			_, lease, err := sem.Acquire(ctx)
			return unlocker(lease, err)
		}}}, nil
	}},
	{"RWMutex.RLock", "one lock, read by every goroutine at once", func(addrs []string, _ int) (locker, error) {
		c, err := distlock.NewClient(addrs, distlock.WithoutRestartFence()) // masters the harness just started, empty
		if err != nil {
			return nil, err
		}
		rw, err := c.NewRWMutex("compare:s5:rw")
		if err != nil {
			return nil, err
		}
		return primitiveLocker{&primitive{c: c, lock: func(ctx context.Context, _ string) (func() error, error) {
			return unlocker(rw.RLock(ctx))
		}}}, nil
	}},
	{"RWMutex.Lock", "own lock per goroutine", func(addrs []string, _ int) (locker, error) {
		c, err := distlock.NewClient(addrs, distlock.WithoutRestartFence()) // masters the harness just started, empty
		if err != nil {
			return nil, err
		}
		rws := map[string]*distlock.RWMutex{}
		return primitiveLocker{&primitive{c: c, lock: func(ctx context.Context, key string) (func() error, error) {
			rw := rws[key] // each key is used by one goroutine, made before the run
			if rw == nil {
				return nil, fmt.Errorf("no RWMutex for %q", key)
			}
			return unlocker(rw.Lock(ctx))
		}}}, prepare(c, rws)
	}},
}

// prepare makes the RWMutex of each key that uncontended uses, up to 64
// goroutines.
func prepare(c *distlock.Client, rws map[string]*distlock.RWMutex) error {
	for i := range 64 {
		key := fmt.Sprintf("compare:s1:%d", i)
		rw, err := c.NewRWMutex(key)
		if err != nil {
			return err
		}
		rws[key] = rw
	}
	return nil
}

// unlocker returns the unlock of a lease just taken, or err.
func unlocker(lease *distlock.Lease, err error) (func() error, error) {
	if err != nil {
		return nil, err
	}
	return func() error { return lease.Unlock(context.Background()) }, nil
}
