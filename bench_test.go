package distlock_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// BenchmarkLockUnlock measures uncontended lock+unlock cycles (each goroutine
// on its own key) through distlock (a Mutex reused with TryLock, and a Mutex
// made per call with Lock) and through two reference clients on the same
// redis-servers: pipelined, the limit (distlocktest.PipelinedRedlock), and
// raw, a naive client (distlocktest.RawRedlock). Compare them as ratios of
// ns/op from one run:
//
//	go test -run '^$' -bench LockUnlock -benchmem
//
// "parallel" runs 32 goroutines (16 x GOMAXPROCS on 2 cores).
func BenchmarkLockUnlock(b *testing.B) {
	for _, n := range []int{1, 3, 5} {
		servers := distlocktest.NewServers(b, n)
		addrs := distlocktest.Addrs(servers)
		for _, mode := range []string{"serial", "parallel"} {
			b.Run(fmt.Sprintf("masters=%d/%s/distlock", n, mode), func(b *testing.B) {
				c, err := newUnfencedClient(addrs)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				runCycles(b, mode, func(key string) func() error {
					m, err := c.NewMutex(key)
					if err != nil {
						b.Fatal(err)
					}
					return func() error {
						lease, err := m.TryLock(context.Background())
						if err != nil {
							return err
						}
						return lease.Unlock(context.Background())
					}
				})
			})
			b.Run(fmt.Sprintf("masters=%d/%s/distlock-newmutex", n, mode), func(b *testing.B) {
				c, err := newUnfencedClient(addrs)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				runCycles(b, mode, func(key string) func() error {
					return func() error {
						m, err := c.NewMutex(key)
						if err != nil {
							return err
						}
						lease, err := m.Lock(context.Background())
						if err != nil {
							return err
						}
						return lease.Unlock(context.Background())
					}
				})
			})
			b.Run(fmt.Sprintf("masters=%d/%s/pipelined", n, mode), func(b *testing.B) {
				r, err := distlocktest.NewPipelinedRedlock(addrs)
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				runCycles(b, mode, refCycle("pipelined", r.TryLock, func(key, token string) { r.Unlock(key, token) }))
			})
			b.Run(fmt.Sprintf("masters=%d/%s/raw", n, mode), func(b *testing.B) {
				r := distlocktest.NewRawRedlock(addrs)
				defer r.Close()
				runCycles(b, mode, refCycle("raw", r.TryLock, r.Unlock))
			})
		}
	}
}

// refCycle returns the cycles of a reference client (its TryLock and
// Unlock) for runCycles.
func refCycle(name string, tryLock func(context.Context, string, time.Duration) (string, bool), unlock func(key, token string)) func(key string) func() error {
	return func(key string) func() error {
		return func() error {
			token, ok := tryLock(context.Background(), key, distlock.DefaultTTL)
			if !ok {
				return fmt.Errorf("%s: no majority for %s", name, key)
			}
			unlock(key, token)
			return nil
		}
	}
}

var benchKeys atomic.Int64

// runCycles runs cycle b.N times, serially or from 32 goroutines, each with
// its own key.
func runCycles(b *testing.B, mode string, newCycle func(key string) func() error) {
	b.ReportAllocs()
	next := func() func() error {
		return newCycle(fmt.Sprintf("distlock-bench:%d", benchKeys.Add(1)))
	}
	if mode == "serial" {
		cycle := next()
		b.ResetTimer()
		for range b.N {
			if err := cycle(); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		cycle := next()
		for pb.Next() {
			if err := cycle(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
