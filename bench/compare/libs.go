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

// library describes how to build a locker. maxMasters is 1 for libraries
// that lock on one Redis deployment only; reference marks code written for
// this comparison (the limit, a naive client), not a library. s2 lists the
// settings it runs the contended scenario with (aggressive or not), s1
// whether it runs the uncontended ones.
type library struct {
	name       string
	reference  bool
	maxMasters int
	s1         bool
	s2         []bool
	settings   func(aggressive bool) string
	build      func(addrs []string, aggressive bool) (locker, error)
}

// libraries are the rows the run measures (-libs filters allLibraries).
var libraries = allLibraries

// settingsOf returns the settings of the library called name.
func settingsOf(name string, aggressive bool) string {
	for _, lib := range allLibraries {
		if lib.name == name {
			return lib.settings(aggressive)
		}
	}
	return ""
}

var allLibraries = []library{
	{
		name: "distlock", maxMasters: 5, s1: true, s2: []bool{false},
		settings: func(aggressive bool) string {
			if aggressive {
				return "TTL 10s, retry 1ms constant, release notices, watchdog on, a Mutex made per call"
			}
			return "defaults: TTL 10s, exp. backoff 10-250ms, release notices, watchdog on, a Mutex made per call"
		},
		build: newDistlock,
	},
	{
		name: "pipelined", reference: true, maxMasters: 5, s1: true,
		settings: func(bool) string {
			return "the limit: redigo, one pipelined connection per master (a writer and a reader goroutine), SET NX PX + compare-and-delete script, fast majority"
		},
		build: func(addrs []string, _ bool) (locker, error) { return newPipelined(addrs) },
	},
	{
		name: "notify", reference: true, maxMasters: 5, s2: []bool{false},
		settings: func(bool) string {
			return "the limit for waiting: pipelined, release publishes, waiters subscribed on every master retry at each announcement (10ms fallback)"
		},
		build: func(addrs []string, _ bool) (locker, error) { return newNotifyRef(addrs) },
	},
	{
		name: "naive", reference: true, maxMasters: 5, s1: true, s2: []bool{true},
		settings: func(bool) string {
			return "redigo pool per master (64 idle), one request per pooled conn, masters in parallel, SET NX PX + compare-and-delete, majority; polls every 1ms"
		},
		build: func(addrs []string, _ bool) (locker, error) { return newRaw(addrs), nil },
	},
	{
		name: "redsync", maxMasters: 5, s1: true, s2: []bool{false, true},
		settings: func(aggressive bool) string {
			if aggressive {
				return "v4 redigo pools (2s conn timeouts), expiry 10s, retry delay 1ms, 100000 tries"
			}
			return "v4 redigo pools (2s conn timeouts), defaults: expiry 8s, 32 tries, delay rand(50-250ms)"
		},
		build: newRedsync,
	},
	{
		name: "redislock", maxMasters: 1, s1: true, s2: []bool{true},
		settings: func(aggressive bool) string {
			if aggressive {
				return "go-redis v9 (pool 64), TTL 10s, linear backoff 1ms"
			}
			return "go-redis v9 (pool 64), TTL 10s, defaults: no retry"
		},
		build: newRedislock,
	},
	{
		name: "rueidislock", maxMasters: 1, s1: true, s2: []bool{false},
		settings: func(bool) string {
			return "rueidis auto-pipelining, KeyMajority 1, KeyValidity 5s, waits on client-side-caching invalidations"
		},
		build: newRueidislock,
	},
}

// --- distlock -------------------------------------------------------------

// distlockLocker makes a Mutex per call, as redsync's users do for dynamic
// names (reuse: one per key, made at its first use).
type distlockLocker struct {
	c     *distlock.Client
	opts  []distlock.Option
	reuse bool
	mu    sync.Mutex
	m     map[string]*distlock.Mutex
}

func newDistlock(addrs []string, aggressive bool) (locker, error) {
	c, err := distlock.NewClient(addrs, distlock.WithoutRestartFence()) // masters the harness just started, empty
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
	if !l.reuse {
		return l.c.NewMutex(key, l.opts...)
	}
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

// --- naive ------------------------------------------------------------------

// raw is the naive baseline (distlocktest.RawRedlock): Redlock as a user
// writes it with redigo pools, polling every 1ms while the lock is held.
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

// --- pipelined -------------------------------------------------------------

// pipelined is the reference of the limit (distlocktest.PipelinedRedlock),
// polling every 1ms while the lock is held.
type pipelined struct {
	r *distlocktest.PipelinedRedlock
}

func newPipelined(addrs []string) (*pipelined, error) {
	r, err := distlocktest.NewPipelinedRedlock(addrs)
	if err != nil {
		return nil, err
	}
	return &pipelined{r}, nil
}

func (p *pipelined) lock(ctx context.Context, key string) (func() error, error) {
	for {
		if token, ok := p.r.TryLock(ctx, key, 10*time.Second); ok {
			return func() error { p.r.Unlock(key, token); return nil }, nil
		}
		t := time.NewTimer(time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func (p *pipelined) close() { p.r.Close() }

// --- notify ----------------------------------------------------------------

// notifyRef is the reference of the limit for waiting: PipelinedRedlock,
// whose release publishes on the key's channel, and a subscriber
// connection per master. Within one client, waiters for a key queue in
// FIFO order and only the head contends; it retries as soon as any master
// announces a release (or after 10ms, in case the announcement was missed).
// A client whose release reached other clients' subscribers lets them try
// first for 1ms.
type notifyRef struct {
	r    *distlocktest.PipelinedRedlock
	subs []redis.PubSubConn
	wg   sync.WaitGroup

	mu         sync.Mutex
	wake       map[string]chan struct{} // closed at the next announcement on the channel
	subscribed map[string]bool
	queue      map[string]chan struct{} // per key, holds a token while a waiter or holder of this client is at the head
	released   map[string]time.Time     // when this client last released the key
}

func newNotifyRef(addrs []string) (*notifyRef, error) {
	r, err := distlocktest.NewPipelinedRedlock(addrs)
	if err != nil {
		return nil, err
	}
	n := &notifyRef{r: r, wake: map[string]chan struct{}{}, subscribed: map[string]bool{}, queue: map[string]chan struct{}{}, released: map[string]time.Time{}}
	for _, addr := range addrs {
		conn, err := redis.Dial("tcp", addr)
		if err != nil {
			n.close()
			return nil, err
		}
		psc := redis.PubSubConn{Conn: conn}
		n.subs = append(n.subs, psc)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			for {
				switch m := psc.Receive().(type) {
				case redis.Message:
					n.mu.Lock()
					if ch := n.wake[m.Channel]; ch != nil {
						close(ch)
						delete(n.wake, m.Channel)
					}
					n.mu.Unlock()
				case error:
					return
				}
			}
		}()
	}
	return n, nil
}

// waitChan subscribes to channel on first use and returns a channel closed
// at its next announcement.
func (n *notifyRef) waitChan(channel string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.subscribed[channel] {
		n.subscribed[channel] = true
		for _, s := range n.subs {
			_ = s.Subscribe(channel)
		}
	}
	ch := n.wake[channel]
	if ch == nil {
		ch = make(chan struct{})
		n.wake[channel] = ch
	}
	return ch
}

// head waits for this client's turn at key (FIFO: a channel's waiters are
// served in order) and returns the turn's end.
func (n *notifyRef) head(ctx context.Context, key string) (func(), error) {
	n.mu.Lock()
	q := n.queue[key]
	if q == nil {
		q = make(chan struct{}, 1)
		n.queue[key] = q
	}
	n.mu.Unlock()
	select {
	case q <- struct{}{}:
		return func() { <-q }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (n *notifyRef) lock(ctx context.Context, key string) (func() error, error) {
	channel := "compare:release:" + key
	done, err := n.head(ctx, key)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	yield := time.Millisecond - time.Since(n.released[key])
	n.mu.Unlock()
	if yield > 0 {
		time.Sleep(yield)
	}
	for {
		woken := n.waitChan(channel)
		if token, ok := n.r.TryLock(ctx, key, 10*time.Second); ok {
			return func() error {
				if _, reached := n.r.UnlockAnnounce(key, token, channel); reached > 1 { // others than our own subscriber
					n.mu.Lock()
					n.released[key] = time.Now()
					n.mu.Unlock()
				}
				done()
				return nil
			}, nil
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-woken:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			done()
			return nil, ctx.Err()
		}
		t.Stop()
	}
}

func (n *notifyRef) close() {
	for _, s := range n.subs {
		s.Close()
	}
	n.wg.Wait()
	n.r.Close()
}

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
