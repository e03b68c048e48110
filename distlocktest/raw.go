package distlocktest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// RawRedlock is the naive baseline for benchmarks: Redlock as a user writes
// it with redigo, with no pipelining, no notifications and no renewal. Each
// request takes a connection from a redigo pool of its master (64 idle
// connections kept, enough for the benchmarks' concurrency), and a round
// sends SET NX PX (to lock) or a compare-and-delete script (to unlock) to
// every master in parallel and counts a majority. PipelinedRedlock is the
// limit.
type RawRedlock struct {
	pools  []*redis.Pool
	quorum int
}

var rawRelease = redis.NewScript(1, rawReleaseSrc)

// NewRawRedlock returns a RawRedlock over the masters at addrs, with a 500ms
// read and write timeout per request.
func NewRawRedlock(addrs []string) *RawRedlock {
	r := &RawRedlock{quorum: len(addrs)/2 + 1}
	for _, addr := range addrs {
		r.pools = append(r.pools, &redis.Pool{MaxIdle: 64, DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", addr, redis.DialReadTimeout(500*time.Millisecond), redis.DialWriteTimeout(500*time.Millisecond))
		}})
	}
	return r
}

// TryLock makes one round for key with a fresh token and returns the token
// if a majority set it. A failed round deletes the token everywhere.
func (r *RawRedlock) TryLock(ctx context.Context, key string, ttl time.Duration) (token string, ok bool) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token = base64.RawURLEncoding.EncodeToString(b[:])
	set := r.onAll(func(c redis.Conn) bool {
		v, err := redis.DoContext(c, ctx, "SET", key, token, "NX", "PX", ttl.Milliseconds())
		return err == nil && v == "OK"
	})
	if set >= r.quorum {
		return token, true
	}
	r.Unlock(key, token)
	return "", false
}

// Lock polls TryLock every interval until it succeeds or ctx ends.
func (r *RawRedlock) Lock(ctx context.Context, key string, ttl, interval time.Duration) (string, error) {
	for {
		if token, ok := r.TryLock(ctx, key, ttl); ok {
			return token, nil
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

// Unlock deletes key on every master where it holds token.
func (r *RawRedlock) Unlock(key, token string) {
	r.onAll(func(c redis.Conn) bool {
		_, err := rawRelease.Do(c, key, token)
		return err == nil
	})
}

// Close closes the pools.
func (r *RawRedlock) Close() {
	for _, p := range r.pools {
		p.Close()
	}
}

// onAll runs f on a connection of every master in parallel and counts the
// masters where it returned true.
func (r *RawRedlock) onAll(f func(c redis.Conn) bool) int {
	do := func(p *redis.Pool) bool {
		c, err := p.GetContext(context.Background())
		if err != nil {
			return false
		}
		defer c.Close()
		return f(c)
	}
	if len(r.pools) == 1 {
		if do(r.pools[0]) {
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
			if do(p) {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(ok.Load())
}
