package distlock

import (
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/benbjohnson/clock"
)

// renewer is a Client's watchdog: a single goroutine that keeps every lease
// of the Client alive and declares a lease lost at its safety deadline
// (Until minus the margin) when it could not be extended on a quorum.
//
// Leases wait in a heap ordered by their next due time (renewal, safety
// deadline, max hold), so the cost is one timer for the whole Client, not a
// goroutine per lease. Extension rounds are event-driven: the pipeline puts
// their replies in the renewer's inbox and the loop counts them. The
// extensions that fall due together go to each master as one script call
// over up to maxExtendBatch keys (extend_many.lua), in one flush.
//
// Extensions are submitted with mu held, and Unlock takes the lease out of
// the heap with mu held before it releases: so no extension is sent after
// Unlock, and one sent before it runs before the release on every master
// (the same connection, in order).
type renewer struct {
	c   *Client
	clk clock.Clock

	mu        sync.Mutex // guards the fields below and every watch
	heap      watchHeap
	started   bool
	closed    bool
	armedAt   time.Time            // when the loop's timer fires; zero while it is not armed
	checkedAt time.Time            // the last check for a suspend of the host (suspend.go)
	inflight  int                  // extension rounds in flight
	armed     func(time.Time, int) // test hook: the time the timer is armed for, and inflight
	starting  []*watch             // renewals due in this pass of the loop, sent together
	inboxMu   sync.Mutex           // guards inbox; never held with mu by the pipeline
	inbox     []reply              // replies of extension rounds, for the loop

	wake    chan struct{}  // pokes the loop; buffered 1
	closing chan struct{}  // closed by close
	wg      sync.WaitGroup // the loop
}

// watch is the renewer's record of one lease. The renewer reads only its
// own records (the lease's mutex and token never change), and ends a lease
// through one call, Lease.lost; renewals move it forward with
// Lease.renewed.
type watch struct {
	lease    *Lease
	m        *Mutex
	token    any
	index    int       // position in the heap; -1 when out of it
	renewAt  time.Time // next extension; zero with WithoutRenewal
	deadline time.Time // Until - margin: lost if not extended by then
	maxHold  time.Time // zero: no limit
	round    *renewRound
	lastErr  error // why the last extension failed
	failing  bool  // the last renewal round failed (reported once per run of failures)
	rounds   int64 // extension rounds started
	slot     int32 // the lease key's cluster slot, once computed; -1 before
}

// keySlot returns the cluster slot of the key w's extensions touch.
func (w *watch) keySlot() int32 {
	if w.slot < 0 {
		w.slot = int32(keySlot(w.m.keyArg.(string)))
	}
	return w.slot
}

// next is when the renewer must act on w next.
func (w *watch) next() time.Time {
	t := w.deadline
	if !w.maxHold.IsZero() && w.maxHold.Before(t) {
		t = w.maxHold
	}
	if w.round == nil && !w.renewAt.IsZero() && w.renewAt.Before(t) {
		t = w.renewAt
	}
	return t
}

// due reports whether the renewer must act on w at now. A renewal may start
// up to its slack early (an earlier extension only adds validity): so one
// wake renews every lease due within the slack, their extensions leave in one
// flush per master, and those leases stay grouped. Deadlines and max holds
// are never acted on early.
func (w *watch) due(now time.Time) bool {
	at := w.next()
	if !at.After(now) {
		return true
	}
	if w.round != nil || !at.Equal(w.renewAt) {
		return false
	}
	slack := min(w.m.cfg.interval()/10, maxRenewSlack)
	return !at.After(now.Add(slack))
}

// maxRenewSlack bounds how early a renewal may start to join a batch.
const maxRenewSlack = 20 * time.Millisecond

// maxExtendBatch bounds the leases extended by one script call, so that one
// call never keeps a master busy for long.
const maxExtendBatch = 256

// renewChunk is one extend_many.lua call: the rounds of its keys, in order.
type renewChunk struct {
	rounds []*renewRound
}

// renewRound is one extension round in flight.
type renewRound struct {
	w    *watch
	t0   time.Time
	t    tally
	done bool // decided, or abandoned by Unlock
	won  bool // decided as extended in time
}

func newRenewer(c *Client) *renewer {
	return &renewer{c: c, clk: c.clock, wake: make(chan struct{}, 1), closing: make(chan struct{})}
}

func (r *renewer) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// put receives a reply of an extension round (replySink).
func (r *renewer) put(rep reply) {
	r.inboxMu.Lock()
	r.inbox = append(r.inbox, rep)
	r.inboxMu.Unlock()
	r.poke()
}

// add starts watching a lease that was just acquired, before it is handed
// to its caller. It reports false, and watches nothing, after close.
func (r *renewer) add(l *Lease) bool {
	cfg := &l.mutex.cfg
	acquired := l.acquired
	l.wd = watch{lease: l, m: l.mutex, token: l.token, index: -1, slot: -1, deadline: l.until.Add(-cfg.safetyMargin())}
	w := &l.wd
	l.w = w
	if !cfg.noRenewal {
		w.renewAt = acquired.Add(cfg.interval())
	}
	if cfg.maxHold > 0 {
		w.maxHold = acquired.Add(cfg.maxHold)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	heap.Push(&r.heap, w)
	if r.checkedAt.IsZero() {
		r.checkedAt = l.basis // a suspend from now on is seen by the loop's next check
	}
	if !r.started {
		r.started = true
		r.wg.Add(1)
		go r.loop()
	}
	if r.armedAt.IsZero() || w.next().Before(r.armedAt) {
		r.poke()
	}
	return true
}

// size returns the number of leases watched.
func (r *renewer) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.heap)
}

// remove stops watching w's lease (Unlock). After it returns no extension
// of the lease is submitted.
func (r *renewer) remove(w *watch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drop(w)
}

// extended moves w's schedule after a successful Lease.Extend that left
// until (settled at basis) as the end of validity, and sets the key again on
// the masters where it was missing. It reports false if the lease ended
// meanwhile.
func (r *renewer) extended(w *watch, until, basis time.Time, missing []int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w.index < 0 {
		return false
	}
	until = w.lease.renewed(until, basis)
	cfg := &w.m.cfg
	w.deadline = until.Add(-cfg.safetyMargin())
	if !cfg.noRenewal {
		w.renewAt = until.Add(cfg.drift() - cfg.ttl + cfg.interval())
	}
	heap.Fix(&r.heap, w.index)
	r.heal(w, missing)
	r.poke() // re-arm for the new schedule
	return true
}

// healLate heals master idx of w's lease when its late answer to a won
// extension round was that the key is missing, and the lease is still
// watched. mu is held.
func (r *renewer) healLate(w *watch, idx int, val any, err error) {
	if a, ok := val.([]any); ok && len(a) == 1 {
		val = a[0] // a read lease's Extend answers {1} or {0}
	}
	if v, ok := val.(int64); ok && err == nil && v == replyMissing && w.index >= 0 {
		r.heal(w, []int{idx})
	}
}

// heal sets w's key again, only if absent, on the masters where an extension
// that reached a quorum found it missing (a master that restarted, or that
// never got the acquire): the lease regains its full fault tolerance. It
// cannot take a key from anyone: SET NX fails where another owner holds it.
// mu is held, so a heal is never sent after Unlock's release.
func (r *renewer) heal(w *watch, masters []int) {
	if len(masters) == 0 {
		return
	}
	// The kind's acquire script, as an acquisition on that master.
	m := w.m
	args := m.kind.heal.evalsha(append(m.appendKeys(nil, m.healKeys), w.token, m.ttlArg)...)
	for _, i := range masters {
		w.lease.touched |= masterBit(i)
		r.c.masters[i].submit(&command{script: m.kind.heal, args: args, idx: i})
	}
}

// late receives a reply of an extension round of w that arrived after the
// round was decided (fast quorum); a master answering that the key is
// missing is healed while the lease is held. It is called by the pipeline's
// goroutines: it only queues the reply for the loop.
func (r *renewer) late(w *watch, rep reply) {
	rep.tag = w
	r.put(rep)
}

// lose declares w's lease lost for reason (an Extend that found the key
// gone).
func (r *renewer) lose(w *watch, reason error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loseLocked(w, reason)
}

// close declares every watched lease lost (ErrClosed), stops the loop and
// waits for it (not for the OnLost callbacks, which may call Close
// themselves). It returns the leases it ended,
// for Client.Close to release.
func (r *renewer) close() []*Lease {
	r.mu.Lock()
	r.closed = true
	var held []*Lease
	for len(r.heap) > 0 {
		w := r.heap[0]
		held = append(held, w.lease)
		r.loseLocked(w, ErrClosed)
	}
	r.mu.Unlock()
	close(r.closing)
	r.wg.Wait()
	return held
}

// drop takes w out of the schedule and abandons its round. mu is held.
func (r *renewer) drop(w *watch) {
	if w.index >= 0 {
		heap.Remove(&r.heap, w.index)
	}
	r.finish(w)
}

// finish marks w's round, if any, as decided. mu is held.
func (r *renewer) finish(w *watch) {
	if w.round != nil {
		w.round.done = true
		w.round = nil
		r.inflight--
	}
}

// loseLocked drops w and ends its lease as lost. mu is held.
func (r *renewer) loseLocked(w *watch, reason error) {
	r.drop(w)
	l := w.lease
	ended := l.lost(reason)
	if ended && r.c.obs.on {
		r.c.obs.report(Event{Kind: EventLost, Name: w.m.name, Masters: len(r.c.masters),
			Duration: r.clk.Since(l.acquired), Err: l.Err()})
	}
	if ended && w.m.cfg.onLost != nil {
		// In its own goroutine, not tracked by wg: the callback may call
		// anything, Close included, which must not wait for the callback
		// that is calling it.
		go w.m.cfg.onLost(l.Err())
	}
}

func (r *renewer) loop() {
	defer r.wg.Done()
	var inbox []reply
	timer := r.clk.Timer(time.Hour)
	defer timer.Stop()
	for {
		r.inboxMu.Lock()
		inbox, r.inbox = r.inbox, inbox[:0]
		r.inboxMu.Unlock()

		r.mu.Lock()
		for i := range inbox {
			r.onReply(inbox[i])
			inbox[i] = reply{} // let the round be collected
		}
		now := r.clk.Now()
		if len(r.heap) > 0 && r.c.watchSuspend {
			r.checkSuspend(now)
		} else {
			r.checkedAt = time.Time{}
		}
		for len(r.heap) > 0 && r.heap[0].due(now) {
			r.act(r.heap[0], now)
		}
		r.sendRounds()
		timer.Stop()
		var fire <-chan time.Time
		r.armedAt = time.Time{}
		if len(r.heap) > 0 {
			at := r.heap[0].next()
			wait := at.Sub(now)
			if r.c.watchSuspend {
				wait = min(wait, suspendCheckEvery) // the next check for a suspend (not reported)
			}
			timer.Reset(wait)
			fire, r.armedAt = timer.C, at
			if r.armed != nil {
				r.armed(at, r.inflight)
			}
		}
		r.mu.Unlock()

		select {
		case <-fire:
		case <-r.wake:
		case <-r.closing:
		}
		select {
		case <-r.closing:
			return
		default:
		}
	}
}

// act does what is due for w at now. mu is held.
func (r *renewer) act(w *watch, now time.Time) {
	switch {
	case !w.maxHold.IsZero() && !now.Before(w.maxHold):
		r.loseLocked(w, ErrMaxHold)
	case !now.Before(w.deadline):
		cause := w.lastErr
		if rd := w.round; rd != nil {
			// The round in flight says most: who said no, who has not
			// answered yet.
			rd.t.stopped = errNoAnswerByDeadline
			cause = rd.t.quorumError()
		}
		if cause == nil {
			cause = errors.New("not extended")
		}
		r.loseLocked(w, fmt.Errorf("not extended on a quorum before the safety deadline: %w", cause))
	default:
		r.startRound(w, now)
	}
}

// startRound starts w's extension round; sendRounds sends it. mu is held.
func (r *renewer) startRound(w *watch, now time.Time) {
	rd := &renewRound{w: w, t0: now}
	rd.t.init(r.c, w.m.kind.extend, w.m.name)
	w.round = rd
	w.rounds++
	r.inflight++
	heap.Fix(&r.heap, w.index)
	r.starting = append(r.starting, w)
}

// sendRounds sends the rounds started in this pass to every master, up to
// maxExtendBatch leases per script call, one call per kind of lease. mu is
// held.
func (r *renewer) sendRounds() {
	if len(r.starting) == 0 {
		return
	}
	// Leases of one kind next to each other: plain locks first.
	slices.SortStableFunc(r.starting, func(a, b *watch) int {
		return kindOrder(a) - kindOrder(b)
	})
	clustered := r.c.clusterMasters()
	r.sendRuns(r.starting, false, maxExtendBatch, func(i int) bool { return clustered == nil || !clustered[i] })
	if clustered != nil {
		// A cluster node refuses a call whose keys are in different slots:
		// one call per run of one kind and one slot there.
		slices.SortStableFunc(r.starting, kindSlotOrder)
		r.sendRuns(r.starting, true, maxExtendBatch, func(i int) bool { return clustered[i] })
	}
	clear(r.starting)
	r.starting = r.starting[:0]
}

// sendRuns sends the extensions of ws (sorted by kind, and by slot when
// bySlot) to the masters i for which to(i), one script call per run of one
// kind (and, bySlot, one slot), up to most leases each. mu is held.
func (r *renewer) sendRuns(ws []*watch, bySlot bool, most int, to func(i int) bool) {
	for len(ws) > 0 {
		// The longest run of one kind's script (and slot), up to most.
		script := ws[0].m.kind.extendMany
		k := 1
		for k < len(ws) && k < most && ws[k].m.kind.extendMany == script && (!bySlot || ws[k].keySlot() == ws[0].keySlot()) {
			k++
		}
		run := ws[:k]
		ws = ws[k:]
		chunk := &renewChunk{rounds: make([]*renewRound, len(run))}
		args := make([]any, 0, 2+3*len(run))
		args = append(args, script.Hash(), len(run)) // EVALSHA sha numkeys keys... argv...
		for i, w := range run {
			chunk.rounds[i] = w.round
			args = append(args, w.m.keyArg)
		}
		for _, w := range run {
			args = append(args, w.token, w.m.ttlArg)
		}
		for i, ms := range r.c.masters {
			if to(i) {
				ms.submit(&command{script: script, args: args, idx: i, tag: chunk, reply: r})
			}
		}
	}
}

// resplit sends the undecided rounds of chunk again to master idx, which
// refused the call: with CROSSSLOT, because its keys are in different
// slots (a cluster node not known as one yet: its INFO refused, or not read
// when the call was built; or a proxy that enforces slots), so from now on
// it gets calls per slot; with TRYAGAIN, because the slot is being moved to
// another node and some of the keys have moved, so each lease gets a call
// of its own, which the node runs or redirects (ASK) to the keys' new
// node. The refusal is not counted: each round gets that master's one
// answer from the new calls. mu is held.
func (r *renewer) resplit(chunk *renewChunk, idx int, most int) {
	r.c.masters[idx].cluster.Store(true)
	var ws []*watch
	for _, rd := range chunk.rounds {
		if !rd.done && rd.w.round == rd {
			ws = append(ws, rd.w)
		}
	}
	slices.SortStableFunc(ws, kindSlotOrder)
	r.sendRuns(ws, true, most, func(i int) bool { return i == idx })
}

// kindSlotOrder orders leases by kind (see kindOrder), then by slot.
func kindSlotOrder(a, b *watch) int {
	return cmp.Or(kindOrder(a)-kindOrder(b), int(a.keySlot()-b.keySlot()))
}

// kindOrder orders leases for sendRounds: plain locks first, then the
// others (read leases).
func kindOrder(w *watch) int {
	if w.m.kind.extendMany == extendManyScript {
		return 0
	}
	return 1
}

// onReply splits one master's answer to an extend_many.lua call among the
// rounds of its keys. mu is held.
func (r *renewer) onReply(rep reply) {
	if w, ok := rep.tag.(*watch); ok { // a late reply to Lease.Extend
		r.healLate(w, rep.idx, rep.val, rep.err)
		return
	}
	chunk := rep.tag.(*renewChunk)
	if len(chunk.rounds) > 1 && isReply(rep.err, "CROSSSLOT") {
		r.resplit(chunk, rep.idx, maxExtendBatch)
		return
	}
	if len(chunk.rounds) > 1 && isReply(rep.err, "TRYAGAIN") {
		r.resplit(chunk, rep.idx, 1)
		return
	}
	vals, isArray := rep.val.([]any)
	if rep.err == nil && (!isArray || len(vals) != len(chunk.rounds)) {
		rep.err = fmt.Errorf("unexpected reply %T to extend", rep.val)
	}
	for i, rd := range chunk.rounds {
		var v any
		if rep.err == nil {
			v = vals[i]
		}
		r.count(rd, rep.idx, v, rep.err)
	}
}

// count records master idx's answer to rd and, once the round is decided,
// reschedules or loses the lease. mu is held.
func (r *renewer) count(rd *renewRound, idx int, val any, err error) {
	if rd.done {
		if rd.won {
			r.healLate(rd.w, idx, val, err)
		}
		return
	}
	t := &rd.t
	t.add(idx, val, err)
	w := rd.w
	cfg := &w.m.cfg
	switch {
	case t.won():
		r.finish(w)
		until, now := r.c.settled(rd.t0.Add(cfg.ttl-cfg.drift()), rd.t0)
		if now.Before(until) {
			rd.won = true // heal the masters that answer "missing" late too
			w.deadline = w.lease.renewed(until, now).Add(-cfg.safetyMargin())
			w.renewAt = rd.t0.Add(cfg.interval())
			w.lastErr = nil
			r.heal(w, missing(t))
		} else {
			w.lastErr = fmt.Errorf("%w: extension round took %v", ErrNoValidity, now.Sub(rd.t0))
			w.renewAt = now.Add(retryDelay(cfg))
		}
		heap.Fix(&r.heap, w.index)
		r.renewal(rd, now, w.lastErr, true)
	case t.refused():
		// A quorum no longer holds our token: final, whatever the rest say.
		err := fmt.Errorf("%w: %w", ErrNotHeld, t.quorumError())
		r.renewal(rd, r.clk.Now(), err, false)
		r.loseLocked(w, err)
	case t.impossible():
		r.finish(w)
		w.lastErr = t.quorumError()
		now := r.clk.Now()
		w.renewAt = now.Add(retryDelay(cfg))
		heap.Fix(&r.heap, w.index)
		r.renewal(rd, now, w.lastErr, true)
	}
}

// renewal reports the event of rd, decided at now with err (nil: won in
// time), and notes whether the lease's renewal started failing (a failure
// that will be retried) or recovered. mu is held.
func (r *renewer) renewal(rd *renewRound, now time.Time, err error, retried bool) {
	w := rd.w
	was := w.failing
	w.failing = err != nil && retried
	if !r.c.obs.on {
		return
	}
	var note uint8
	switch {
	case !was && w.failing:
		note = noteFailing
	case was && err == nil:
		note = noteRecovered
	}
	r.c.obs.reportNote(roundEvent(EventRenewal, &rd.t, now.Sub(rd.t0), err), note)
}

// retryDelay is the pause before an extension that failed is tried again.
func retryDelay(cfg *lockConfig) time.Duration {
	return max(cfg.interval()/10, time.Millisecond)
}

// watchHeap orders watches by next due time (container/heap).
type watchHeap []*watch

func (h watchHeap) Len() int           { return len(h) }
func (h watchHeap) Less(i, j int) bool { return h[i].next().Before(h[j].next()) }
func (h watchHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *watchHeap) Push(x any) {
	w := x.(*watch)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *watchHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	w.index = -1
	*h = old[:len(old)-1]
	return w
}
