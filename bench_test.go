package distlock_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// BenchmarkLockUnlock measures uncontended lock+unlock cycles (each goroutine
// on its own key) through distlock and through the raw bound on the same
// redis-servers: plain redigo, one request per pooled connection, SET NX PX
// then compare-and-delete on every master in parallel, majority required.
// Compare the two as a ratio of ns/op from one run:
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
				c, err := distlock.NewClient(addrs)
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
			b.Run(fmt.Sprintf("masters=%d/%s/raw", n, mode), func(b *testing.B) {
				r := newRawRedlock(addrs)
				defer r.close()
				runCycles(b, mode, func(key string) func() error {
					return func() error { return r.cycle(key) }
				})
			})
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

// rawRedlock is the round-trip bound: the least a Redlock client can do per
// cycle, with no pipelining: SET NX PX and a compare-and-delete script on
// every master in parallel, one request per pooled connection.
type rawRedlock struct {
	pools  []*redis.Pool
	quorum int
}

var rawRelease = redis.NewScript(1, `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

func newRawRedlock(addrs []string) *rawRedlock {
	r := &rawRedlock{quorum: len(addrs)/2 + 1}
	for _, addr := range addrs {
		r.pools = append(r.pools, &redis.Pool{
			MaxIdle: 64,
			DialContext: func(ctx context.Context) (redis.Conn, error) {
				return redis.DialContext(ctx, "tcp", addr, redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second))
			},
		})
	}
	return r
}

func (r *rawRedlock) close() {
	for _, p := range r.pools {
		p.Close()
	}
}

func (r *rawRedlock) onAll(f func(p *redis.Pool) bool) int {
	if len(r.pools) == 1 {
		if f(r.pools[0]) {
			return 1
		}
		return 0
	}
	var ok atomic.Int32
	var wg sync.WaitGroup
	for _, p := range r.pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f(p) {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(ok.Load())
}

func (r *rawRedlock) cycle(key string) error {
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	token := base64.RawURLEncoding.EncodeToString(tok[:])
	ctx := context.Background()
	set := r.onAll(func(p *redis.Pool) bool {
		c, err := p.GetContext(ctx)
		if err != nil {
			return false
		}
		defer c.Close()
		v, err := redis.DoContext(c, ctx, "SET", key, token, "NX", "PX", 10000)
		return err == nil && v == "OK"
	})
	r.onAll(func(p *redis.Pool) bool {
		c, err := p.GetContext(ctx)
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = rawRelease.DoContext(ctx, c, key, token)
		return err == nil
	})
	if set < r.quorum {
		return fmt.Errorf("raw: set on %d masters, need %d", set, r.quorum)
	}
	return nil
}
