package distlock

import (
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// releaseSuffix names a lock's release channel: "<name>:release".
const releaseSuffix = ":release"

// handoffYield is how long a Client that just released a lock that others
// were announced to waits before it tries to take the same lock again: long
// enough for a notified waiter elsewhere to win it, short enough not to
// matter when none does. Without it, the releaser wins its own lock back
// most of the time, before any notice arrives.
const handoffYield = 2 * time.Millisecond

// notifier turns release announcements into wake-ups for the Client's Lock
// calls that wait. It keeps one subscriber connection per master (started
// when the first Lock has to wait) and, per lock name, a FIFO of the
// Client's waiters: only the head of the queue contends on the masters; the
// others wait their turn, so a release does not send them all at once.
type notifier struct {
	c  *Client
	id string // the Client's id: announcements of its own releases are skipped

	mu     sync.Mutex
	subs   []*pubsub // one per master; nil until needed
	names  map[string]*waitQueue
	closed bool
}

type waitQueue struct {
	waiters    []*waiter // FIFO; waiters[0] is the head
	yieldUntil time.Time // set by an Unlock that was announced to others
	lastNotice string    // the last release announced ("<client id>:<token>")
}

type waiter struct {
	head  chan struct{} // closed when the waiter reaches the head
	wake  chan bool     // a release: true when announced by a master, false when by this Client; buffered 1
	since time.Time
}

func newNotifier(c *Client) *notifier {
	return &notifier{c: c, id: c.idArg.(string), names: make(map[string]*waitQueue)}
}

func (n *notifier) queue(name string) *waitQueue {
	q := n.names[name]
	if q == nil {
		q = &waitQueue{}
		n.names[name] = q
	}
	return q
}

// join queues a waiter for name and subscribes to its release channel. It
// returns nil when the Client is closed.
func (n *notifier) join(name string) *waiter {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	if n.subs == nil {
		n.subs = make([]*pubsub, len(n.c.masters))
		for i, ms := range n.c.masters {
			n.subs[i] = startPubSub(ms, n.onMessage)
		}
	}
	q := n.queue(name)
	w := &waiter{head: make(chan struct{}), wake: make(chan bool, 1), since: n.c.clock.Now()}
	q.waiters = append(q.waiters, w)
	if len(q.waiters) == 1 {
		close(w.head)
		for _, p := range n.subs {
			p.add(name + releaseSuffix)
		}
	}
	return w
}

// leave takes w out of name's queue; the next waiter becomes the head.
func (n *notifier) leave(name string, w *waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	q := n.names[name]
	if q == nil {
		return
	}
	for i, x := range q.waiters {
		if x != w {
			continue
		}
		q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
		if i == 0 && len(q.waiters) > 0 {
			close(q.waiters[0].head)
		}
		break
	}
	if len(q.waiters) == 0 {
		if !n.closed {
			for _, p := range n.subs {
				p.remove(name + releaseSuffix)
			}
		}
		if !n.c.clock.Now().Before(q.yieldUntil) {
			delete(n.names, name)
		}
	}
}

// queued reports whether some of the Client's Lock calls wait for name: a
// new Lock call then queues behind them instead of barging in.
func (n *notifier) queued(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	q := n.names[name]
	return q != nil && len(q.waiters) > 0
}

// onMessage is a release announcement from one master: "<client id>:<token>".
// Releases by this Client woke its next waiter already, without the detour
// through Redis. Every master announces the same release; only the first
// copy wakes the waiter, the others would only send it after a lock that
// is already taken again.
func (n *notifier) onMessage(channel string, notice []byte) {
	name, ok := strings.CutSuffix(channel, releaseSuffix)
	if !ok {
		return
	}
	from, _, _ := strings.Cut(string(notice), ":")
	if from == n.id {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	q := n.names[name]
	if q == nil || len(q.waiters) == 0 || len(notice) > 0 && q.lastNotice == string(notice) {
		return
	}
	q.lastNotice = string(notice)
	select {
	case q.waiters[0].wake <- true:
	default:
	}
}

// released wakes the head waiter of name, if any, after a release by this
// Client.
func (n *notifier) released(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if q := n.names[name]; q != nil && len(q.waiters) > 0 {
		select {
		case q.waiters[0].wake <- false:
		default:
		}
	}
}

// yield records that this Client released name while others were announced
// to: its own next attempt on name waits a moment, to let one of them in.
func (n *notifier) yield(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.queue(name).yieldUntil = n.c.clock.Now().Add(handoffYield)
	}
}

// yieldFor returns how long a new Lock call on name, not queued behind
// others of this Client, should wait before its first attempt (0: none).
func (n *notifier) yieldFor(name string) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	q := n.names[name]
	if q == nil {
		return 0
	}
	d := q.yieldUntil.Sub(n.c.clock.Now())
	if d <= 0 && len(q.waiters) == 0 {
		delete(n.names, name)
	}
	return max(d, 0)
}

// spread is the pause a woken waiter takes before it retries: random, and
// shorter the longer it has waited, so that across processes the waiters
// of one lock do not all hit the masters at once and the oldest tend to
// go first.
func (n *notifier) spread(w *waiter) time.Duration {
	waited := n.c.clock.Since(w.since)
	limit := time.Millisecond * 10 / (10 + time.Duration(waited/time.Millisecond))
	if limit <= 0 {
		return 0
	}
	return rand.N(limit)
}

// close stops the subscriber connections and waits for them.
func (n *notifier) close() {
	n.mu.Lock()
	n.closed = true
	subs := n.subs
	n.mu.Unlock()
	for _, p := range subs {
		p.close()
	}
}
