package distlock

import (
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// handoffYield is how long a Client that just released a lock that others
// were announced to waits before it tries to take the same lock again: long
// enough for a notified waiter elsewhere to win it, short enough not to
// matter when none does. Without it, the releaser wins its own lock back
// most of the time, before any notice arrives.
const handoffYield = 2 * time.Millisecond

// subscribeLinger is how long a lock's release channel stays subscribed
// after its last waiter left: a Client that waits for the same lock again
// soon (a worker in a loop) is subscribed already, and misses no release
// while a new subscription is on its way. Real time: it is housekeeping of
// the subscriber connections, not lock time.
const subscribeLinger = time.Second

// notifier turns release announcements into wake-ups for the Client's Lock
// calls that wait. It keeps one subscriber connection per master (started
// when the first Lock has to wait) and, per lock (by its release channel), a
// FIFO of the Client's waiters: only the head of the queue contends on the
// masters; the others wait their turn, so a release does not send them all
// at once. It keeps nothing for a lock nobody waits on: a queue goes when
// its last waiter leaves, its subscription subscribeLinger later, and a
// yield when it expires.
type notifier struct {
	c  *Client
	id string // the Client's id: announcements of its own releases are skipped

	mu        sync.Mutex
	subs      []subscriber // one per master, and a sharded one per master that may be a cluster; nil until needed
	queues    map[lane]*waitQueue
	listeners map[string][]*listener // by channel: the typed layers' subscriptions (Observe)
	yields    map[string]time.Time   // set by an Unlock that was announced to others
	nextSweep time.Time              // when expired yields are next swept
	closed    bool
	lingering map[lane]time.Time // lanes without waiters still subscribed, until when
	linger    *time.Timer        // ends the lingering subscriptions that expired; nil when not armed
	lingerWG  sync.WaitGroup     // the linger timer's callback, for close
}

// lane is one queue of a Client's waiters on a release channel: an
// RWMutex's readers queue apart from its writers (and plain lockers), so
// that a reader at the head of a queue never waits for a writer queued
// behind it, whose bar keeps that reader out.
type lane struct {
	ch     string
	shared bool // readers
}

type waitQueue struct {
	waiters    []*waiter // FIFO; waiters[0] is the head
	lastNotice string    // the last release announced ("<client id>:<token>")
}

type waiter struct {
	head  chan struct{} // closed when the waiter reaches the head
	wake  chan bool     // a release: true when announced by a master, false when by this Client; buffered 1
	since time.Time
	// afterLocal: the waiter before it left the queue holding the lock, and
	// that lease excludes this one (see attempt.exclusive); set before head
	// is closed.
	afterLocal bool
}

func newNotifier(c *Client) *notifier {
	return &notifier{c: c, id: c.idArg.(string), queues: make(map[lane]*waitQueue), yields: make(map[string]time.Time),
		listeners: make(map[string][]*listener), lingering: make(map[lane]time.Time)}
}

// subscriber subscribes to channels on one master (pubsub), or on the
// nodes of a cluster (shardSubs).
type subscriber interface {
	add(channel string)
	remove(channel string)
	close()
}

// listener is one typed-layer subscription to a channel.
type listener struct{ f func(data []byte) }

// start starts the subscriber connections if they are not running. mu is
// held, and the notifier is not closed.
func (n *notifier) start() {
	if n.subs == nil {
		for _, ms := range n.c.masters {
			n.subs = append(n.subs, startPubSub(ms, n.onMessage))
			if ms.router != nil {
				n.subs = append(n.subs, newShardSubs(ms.router, n.onMessage))
			}
		}
	}
}

// listen calls f with every message published on ch on any master, through
// the Client's subscriber connections (one per master, shared with Lock's
// waiters: a listener takes no connection of its own), until stop is
// called. f runs on a subscriber goroutine: it must not block. ok is false
// after Close.
func (n *notifier) listen(ch string, f func(data []byte)) (stop func(), ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return func() {}, false
	}
	n.start()
	l := &listener{f: f}
	n.listeners[ch] = append(n.listeners[ch], l)
	if len(n.listeners[ch]) == 1 {
		for _, p := range n.subs {
			p.add(ch)
		}
	}
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		ls := n.listeners[ch]
		for i, x := range ls {
			if x == l {
				ls = append(ls[:i], ls[i+1:]...)
				break
			}
		}
		if len(ls) > 0 {
			n.listeners[ch] = ls
			return
		}
		delete(n.listeners, ch)
		if !n.closed {
			for _, p := range n.subs {
				p.remove(ch)
			}
		}
	}, true
}

// join queues a waiter in l, for the lock whose release channel is l.ch,
// and subscribes to l.ch. It returns nil when the Client is closed.
func (n *notifier) join(l lane) *waiter {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.start()
	q := n.queues[l]
	if q == nil {
		q = &waitQueue{}
		n.queues[l] = q
	}
	w := &waiter{head: make(chan struct{}), wake: make(chan bool, 1), since: n.c.clock.Now()}
	q.waiters = append(q.waiters, w)
	if len(q.waiters) == 1 {
		close(w.head)
		if _, ok := n.lingering[l]; ok {
			delete(n.lingering, l) // still subscribed
		} else {
			for _, p := range n.subs {
				p.add(l.ch)
			}
		}
	}
	return w
}

// unlinger ends the lingering subscriptions that expired, and re-arms for
// the others (the linger timer's callback).
func (n *notifier) unlinger() {
	defer n.lingerWG.Done()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.linger = nil
	if n.closed {
		return
	}
	now := time.Now()
	for l, until := range n.lingering {
		if !now.Before(until) {
			delete(n.lingering, l)
			for _, p := range n.subs {
				p.remove(l.ch)
			}
		}
	}
	if len(n.lingering) > 0 {
		n.armLinger()
	}
}

// armLinger arms the linger timer if it is not armed. mu is held.
func (n *notifier) armLinger() {
	if n.linger != nil || n.closed {
		return
	}
	n.lingerWG.Add(1)
	n.linger = time.AfterFunc(subscribeLinger/4, n.unlinger)
}

// leave takes w out of l's queue; the next waiter becomes the head, told
// whether w leaves holding the lock (acquired).
func (n *notifier) leave(l lane, w *waiter, acquired bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	q := n.queues[l]
	if q == nil {
		return
	}
	for i, x := range q.waiters {
		if x != w {
			continue
		}
		q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
		if i == 0 && len(q.waiters) > 0 {
			q.waiters[0].afterLocal = acquired
			close(q.waiters[0].head)
		}
		break
	}
	if len(q.waiters) == 0 {
		if !n.closed {
			n.lingering[l] = time.Now().Add(subscribeLinger)
			n.armLinger()
		}
		delete(n.queues, l)
	}
}

// queued reports whether some of the Client's Lock calls wait on ch: a new
// Lock call then queues behind them instead of barging in.
func (n *notifier) queued(l lane) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.queues[l] != nil
}

// onMessage is a release announcement from one master: "<client id>:<token>".
// Releases by this Client woke its next waiter already, without the detour
// through Redis. Every master announces the same release; only the first
// copy wakes the waiter, the others would only send it after a lock that
// is already taken again.
func (n *notifier) onMessage(ch string, notice []byte) {
	n.mu.Lock()
	if ls := n.listeners[ch]; len(ls) > 0 {
		fs := make([]func([]byte), len(ls))
		for i, l := range ls {
			fs[i] = l.f
		}
		n.mu.Unlock()
		for _, f := range fs {
			f(notice)
		}
		return
	}
	n.mu.Unlock()
	from, _, _ := strings.Cut(string(notice), ":")
	if from == n.id {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, shared := range []bool{false, true} {
		q := n.queues[lane{ch, shared}]
		if q == nil || len(q.waiters) == 0 || len(notice) > 0 && q.lastNotice == string(notice) {
			continue
		}
		q.lastNotice = string(notice)
		select {
		case q.waiters[0].wake <- true:
		default:
		}
	}
}

// released wakes the head waiters on ch (of both lanes), if any, after a
// release by this Client.
func (n *notifier) released(ch string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, shared := range []bool{false, true} {
		if q := n.queues[lane{ch, shared}]; q != nil && len(q.waiters) > 0 {
			select {
			case q.waiters[0].wake <- false:
			default:
			}
		}
	}
}

// yield records that this Client released the lock of ch while others were
// announced to: its own next attempt on it waits a moment, to let one of
// them in.
func (n *notifier) yield(ch string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	now := n.c.clock.Now()
	n.sweep(now)
	n.yields[ch] = now.Add(handoffYield)
}

// sweep forgets the yields that expired, at most once per handoffYield, so
// the map holds only the locks released in the last few milliseconds. mu is
// held.
func (n *notifier) sweep(now time.Time) {
	if now.Before(n.nextSweep) {
		return
	}
	for k, until := range n.yields {
		if !now.Before(until) {
			delete(n.yields, k)
		}
	}
	n.nextSweep = now.Add(handoffYield)
}

// yieldFor returns how long a new Lock call on ch, not queued behind others
// of this Client, should wait before its first attempt (0: none).
func (n *notifier) yieldFor(ch string) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sweep(n.c.clock.Now())
	until, ok := n.yields[ch]
	if !ok {
		return 0
	}
	d := until.Sub(n.c.clock.Now())
	if d <= 0 {
		delete(n.yields, ch)
	}
	return max(d, 0)
}

// size returns how many locks the notifier keeps state for, after sweeping
// (tests).
func (n *notifier) size() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sweep(n.c.clock.Now())
	return len(n.queues) + len(n.yields) + len(n.listeners) + len(n.lingering)
}

// spread is the pause a woken waiter takes before it retries: random, and
// shorter the longer it has waited (up to 2ms for a waiter that just came,
// 0.5ms after 10ms of waiting, 0.125ms after 30ms), so that across
// processes the waiters of one lock do not all hit the masters at once and
// the oldest tend to go first.
func (n *notifier) spread(w *waiter) time.Duration {
	waited := time.Duration(n.c.clock.Since(w.since) / time.Millisecond)
	limit := 2 * time.Millisecond * 100 / ((10 + waited) * (10 + waited))
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
	if n.linger != nil && n.linger.Stop() {
		n.lingerWG.Done() // its callback will not run
	}
	n.linger = nil
	n.mu.Unlock()
	n.lingerWG.Wait()
	for _, p := range subs {
		p.close()
	}
}

// subscribe calls onMsg with every message published on ch on any master,
// on the Client's shared subscriber connections, until stop is called;
// onMsg must not block. ok is false after Close. It is how the typed layers
// listen (Election.Observe).
func (m *Mutex) subscribe(ch string, onMsg func(data []byte)) (stop func(), ok bool) {
	return m.client.notifier.listen(ch, onMsg)
}

// closed returns a channel closed when the Client's Close begins.
func (m *Mutex) closed() <-chan struct{} { return m.client.done }
