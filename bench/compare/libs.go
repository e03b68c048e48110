package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/bsm/redislock"
	"github.com/cenkalti/backoff/v4"
	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	redsyncredigo "github.com/go-redsync/redsync/v4/redis/redigo"
	"github.com/gomodule/redigo/redis"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/redis/rueidis/rueidislock"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// locker is one library, set up against some masters.
type locker interface {
	// lock waits for the lock (as the library does by default, or with the
	// aggressive settings) and returns its unlock.
	lock(ctx context.Context, key string) (unlock func() error, err error)
	close()
}

// library describes how to build a locker; maxMasters is 1 for libraries
// that lock on one Redis deployment only.
type library struct {
	name       string
	maxMasters int
	settings   func(aggressive bool) string
	build      func(addrs []string, aggressive bool) (locker, error)
}

var libraries = []library{
	{
		name: "distlock", maxMasters: 5,
		settings: func(aggressive bool) string {
			if aggressive {
				return "TTL 10s, retry 1ms constant, release notices, watchdog on"
			}
			return "defaults: TTL 10s, exp. backoff 10-250ms, release notices, watchdog on"
		},
		build: newDistlock,
	},
	{
		name: "raw", maxMasters: 5,
		settings: func(bool) string {
			return "redigo, 1 request per pooled conn, SET NX PX + compare-and-delete, majority; polls every 1ms"
		},
		build: func(addrs []string, _ bool) (locker, error) { return newRaw(addrs), nil },
	},
	{
		name: "redsync", maxMasters: 5,
		settings: func(aggressive bool) string {
			if aggressive {
				return "v4 redigo pools (2s conn timeouts), expiry 10s, retry delay 1ms, 100000 tries"
			}
			return "v4 redigo pools (2s conn timeouts), defaults: expiry 8s, 32 tries, delay rand(50-250ms)"
		},
		build: newRedsync,
	},
	{
		name: "redislock", maxMasters: 1,
		settings: func(aggressive bool) string {
			if aggressive {
				return "go-redis v9, TTL 10s, linear backoff 1ms"
			}
			return "go-redis v9, TTL 10s, defaults: no retry"
		},
		build: newRedislock,
	},
	{
		name: "rueidislock", maxMasters: 1,
		settings: func(bool) string {
			return "rueidis auto-pipelining, KeyMajority 1, KeyValidity 5s, waits on client-side-caching invalidations"
		},
		build: newRueidislock,
	},
}

// --- distlock -------------------------------------------------------------

type distlockLocker struct {
	c    *distlock.Client
	opts []distlock.Option
	mu   sync.Mutex
	m    map[string]*distlock.Mutex
}

func newDistlock(addrs []string, aggressive bool) (locker, error) {
	c, err := distlock.NewClient(addrs)
	if err != nil {
		return nil, err
	}
	l := &distlockLocker{c: c, m: map[string]*distlock.Mutex{}}
	if aggressive {
		l.opts = append(l.opts, distlock.WithRetry(constant(time.Millisecond)))
	}
	return l, nil
}

func (l *distlockLocker) mutex(key string) (*distlock.Mutex, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.m[key]; m != nil {
		return m, nil
	}
	m, err := l.c.NewMutex(key, l.opts...)
	if err == nil {
		l.m[key] = m
	}
	return m, err
}

func (l *distlockLocker) lock(ctx context.Context, key string) (func() error, error) {
	m, err := l.mutex(key)
	if err != nil {
		return nil, err
	}
	lease, err := m.Lock(ctx)
	if err != nil {
		return nil, err
	}
	return func() error { return lease.Unlock(context.Background()) }, nil
}

func (l *distlockLocker) close() { l.c.Close() }

// --- raw ------------------------------------------------------------------

// raw is the round-trip bound (distlocktest.RawRedlock), polling every 1ms
// while the lock is held.
type raw struct{ r *distlocktest.RawRedlock }

func newRaw(addrs []string) *raw { return &raw{distlocktest.NewRawRedlock(addrs)} }

func (r *raw) lock(ctx context.Context, key string) (func() error, error) {
	token, err := r.r.Lock(ctx, key, 10*time.Second, time.Millisecond)
	if err != nil {
		return nil, err
	}
	return func() error { r.r.Unlock(key, token); return nil }, nil
}

func (r *raw) close() { r.r.Close() }

// --- redsync --------------------------------------------------------------

type redsyncLocker struct {
	rs    *redsync.Redsync
	pools []*redis.Pool
	opts  []redsync.Option
}

func newRedsync(addrs []string, aggressive bool) (locker, error) {
	l := &redsyncLocker{}
	var pools []redsyncredis.Pool
	for _, addr := range addrs {
		// redsync's redigo calls take no context: without read and write
		// timeouts a paused master would hang them for good.
		p := &redis.Pool{MaxIdle: 64, DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", addr, redis.DialConnectTimeout(2*time.Second),
				redis.DialReadTimeout(2*time.Second), redis.DialWriteTimeout(2*time.Second))
		}}
		l.pools = append(l.pools, p)
		pools = append(pools, redsyncredigo.NewPool(p))
	}
	l.rs = redsync.New(pools...)
	if aggressive {
		l.opts = []redsync.Option{redsync.WithExpiry(10 * time.Second), redsync.WithRetryDelay(time.Millisecond), redsync.WithTries(100000)}
	}
	return l, nil
}

func (l *redsyncLocker) lock(ctx context.Context, key string) (func() error, error) {
	m := l.rs.NewMutex(key, l.opts...)
	if err := m.LockContext(ctx); err != nil {
		return nil, err
	}
	return func() error {
		ok, err := m.UnlockContext(context.Background())
		if err == nil && !ok {
			err = errors.New("redsync: unlock failed")
		}
		return err
	}, nil
}

func (l *redsyncLocker) close() {
	for _, p := range l.pools {
		p.Close()
	}
}

// --- bsm/redislock --------------------------------------------------------

type redislockLocker struct {
	client *goredis.Client
	locker *redislock.Client
	opt    *redislock.Options
}

func newRedislock(addrs []string, aggressive bool) (locker, error) {
	client := goredis.NewClient(&goredis.Options{Addr: addrs[0], PoolSize: 64})
	l := &redislockLocker{client: client, locker: redislock.New(client)}
	if aggressive {
		l.opt = &redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Millisecond)}
	}
	return l, nil
}

func (l *redislockLocker) lock(ctx context.Context, key string) (func() error, error) {
	lk, err := l.locker.Obtain(ctx, key, 10*time.Second, l.opt)
	if err != nil {
		return nil, err
	}
	return func() error { return lk.Release(context.Background()) }, nil
}

func (l *redislockLocker) close() { l.client.Close() }

// --- rueidislock ----------------------------------------------------------

type rueidisLocker struct{ l rueidislock.Locker }

func newRueidislock(addrs []string, _ bool) (locker, error) {
	l, err := rueidislock.NewLocker(rueidislock.LockerOption{
		ClientOption: rueidis.ClientOption{InitAddress: addrs[:1], DisableCache: false},
		KeyMajority:  1,
	})
	if err != nil {
		return nil, err
	}
	return &rueidisLocker{l: l}, nil
}

// lock holds the lock until unlock: rueidislock ties a lock's life to the
// context it was taken with, so that context must outlive the caller's
// (which only bounds the wait).
func (r *rueidisLocker) lock(ctx context.Context, key string) (func() error, error) {
	life, end := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, end)
	_, release, err := r.l.WithContext(life, key)
	if !stop() && err == nil { // ctx ended while we got it: give it back
		release()
		err = ctx.Err()
	}
	if err != nil {
		end()
		return nil, err
	}
	return func() error { release(); end(); return nil }, nil
}

func (r *rueidisLocker) close() { r.l.Close() }

func constant(d time.Duration) func() backoff.BackOff {
	return func() backoff.BackOff { return backoff.NewConstantBackOff(d) }
}
