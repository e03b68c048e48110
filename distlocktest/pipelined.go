package distlocktest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// PipelinedRedlock is the reference of the limit for benchmarks: the
// fastest plain Redlock round this package knows how to write with redigo,
// with nothing a library adds (no renewal, no release notices, no fencing,
// no fault handling beyond failing a request). Each master has one
// connection; callers queue requests for a writer goroutine, which sends
// every request queued so far and flushes them with one write, and a reader
// goroutine hands each reply back in order. A round sends SET NX PX (to
// lock) or a compare-and-delete script (to unlock) to every master and
// returns as soon as a majority agreed or can no longer agree.
//
// A connection that fails is not replaced: the reference is for healthy
// masters. Close stops the goroutines.
type PipelinedRedlock struct {
	conns  []*refConn
	quorum int
}

// refConn is one master's pipelined connection.
type refConn struct {
	conn  redis.Conn
	queue chan *refReq   // requests for the writer
	sent  chan []*refReq // flushed batches, for the reader
	free  chan []*refReq // batch slices back from the reader, for reuse
	done  sync.WaitGroup
	err   error // set by the writer when the connection failed
}

// refReq is one request to one master.
type refReq struct {
	cmd  string
	args []any
	out  chan<- refReply
}

type refReply struct {
	val any
	err error
}

// NewPipelinedRedlock connects to the masters at addrs (one connection each).
func NewPipelinedRedlock(addrs []string) (*PipelinedRedlock, error) {
	r := &PipelinedRedlock{quorum: len(addrs)/2 + 1}
	for _, addr := range addrs {
		conn, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(time.Second))
		if err == nil {
			_, err = conn.Do("SCRIPT", "LOAD", rawReleaseSrc)
		}
		if err == nil {
			_, err = conn.Do("SCRIPT", "LOAD", announceSrc)
		}
		if err != nil {
			r.Close()
			return nil, err
		}
		c := &refConn{conn: conn, queue: make(chan *refReq, 4096), sent: make(chan []*refReq, 4096), free: make(chan []*refReq, 4096)}
		c.done.Add(2)
		go c.write()
		go c.read()
		r.conns = append(r.conns, c)
	}
	return r, nil
}

// write sends every queued request with one flush per batch.
func (c *refConn) write() {
	defer c.done.Done()
	defer close(c.sent)
	for req := range c.queue {
		var batch []*refReq
		select {
		case batch = <-c.free:
		default:
		}
		batch = append(batch, req)
	fill:
		for {
			select {
			case more, ok := <-c.queue:
				if !ok {
					break fill
				}
				batch = append(batch, more)
			default:
				break fill
			}
		}
		for _, q := range batch {
			if c.err == nil {
				c.err = c.conn.Send(q.cmd, q.args...)
			}
		}
		if c.err == nil {
			c.err = c.conn.Flush()
		}
		if c.err != nil {
			for _, q := range batch {
				q.out <- refReply{err: c.err}
			}
			continue
		}
		c.sent <- batch
	}
}

// read hands each reply to its request, in order.
func (c *refConn) read() {
	defer c.done.Done()
	for batch := range c.sent {
		for i, q := range batch {
			v, err := c.conn.Receive()
			q.out <- refReply{v, err}
			batch[i] = nil
		}
		select {
		case c.free <- batch[:0]:
		default:
		}
	}
}

const rawReleaseSrc = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`

var rawReleaseSHA = redis.NewScript(1, rawReleaseSrc).Hash()

// round sends cmd with args to every master and counts the replies ok
// accepts, until a majority did or cannot.
func (r *PipelinedRedlock) round(cmd string, args []any, ok func(any) bool) bool {
	won, _ := r.roundMax(cmd, args, ok)
	return won
}

// roundMax is round, and also returns the largest integer reply counted.
func (r *PipelinedRedlock) roundMax(cmd string, args []any, ok func(any) bool) (bool, int64) {
	n := len(r.conns)
	out := make(chan refReply, n) // the buffer takes the replies not waited for
	for _, c := range r.conns {
		c.queue <- &refReq{cmd: cmd, args: args, out: out}
	}
	yes, no := 0, 0
	var hi int64
	for yes < r.quorum && no <= n-r.quorum {
		rep := <-out
		if i, isInt := rep.val.(int64); isInt {
			hi = max(hi, i)
		}
		if rep.err == nil && ok(rep.val) {
			yes++
		} else {
			no++
		}
	}
	return yes >= r.quorum, hi
}

// TryLock makes one round for key with a fresh token and returns the token
// if a majority set it. A failed round deletes the token everywhere.
func (r *PipelinedRedlock) TryLock(_ context.Context, key string, ttl time.Duration) (token string, ok bool) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token = base64.RawURLEncoding.EncodeToString(b[:])
	if r.round("SET", []any{key, token, "NX", "PX", ttl.Milliseconds()}, func(v any) bool { return v == "OK" }) {
		return token, true
	}
	r.Unlock(key, token)
	return "", false
}

// Unlock deletes key on every master where it holds token, and reports
// whether a majority did.
func (r *PipelinedRedlock) Unlock(key, token string) bool {
	return r.round("EVALSHA", []any{rawReleaseSHA, 1, key, token}, func(v any) bool { return v == int64(1) })
}

// Close stops the goroutines and closes the connections. Requests must not
// be in flight.
func (r *PipelinedRedlock) Close() {
	for _, c := range r.conns {
		close(c.queue)
		c.done.Wait()
		c.conn.Close()
	}
}

const announceSrc = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 + redis.call('PUBLISH', ARGV[2], ARGV[1]) end return 0`

var announceSHA = redis.NewScript(1, announceSrc).Hash()

// UnlockAnnounce deletes key on every master where it holds token and
// publishes the release on channel there, and reports whether a majority
// did, and the most subscribers the announcement reached on one master:
// the release of the notification reference.
func (r *PipelinedRedlock) UnlockAnnounce(key, token, channel string) (ok bool, reached int) {
	ok, hi := r.roundMax("EVALSHA", []any{announceSHA, 1, key, token, channel}, func(v any) bool { i, _ := v.(int64); return i >= 1 })
	return ok, int(max(hi-1, 0))
}
