package distlock

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// EventKind says what an Event reports.
type EventKind uint8

// The kinds of Event.
const (
	// EventAcquire: an acquire round ended (Lock, TryLock, RLock, a slot of
	// Acquire, a name of a MultiMutex). Err is nil when it won: the lock is
	// taken. Lock reports one per round it makes.
	EventAcquire EventKind = iota + 1
	// EventRetry: Lock will try again; Err is why the last round failed and
	// Duration the longest it waits first (a release announcement may end
	// the wait sooner).
	EventRetry
	// EventWait: Lock found the lock held and now waits for its release to
	// be announced.
	EventWait
	// EventRelease: an Unlock's release round ended (also the keys kept by
	// WithMinHold). Err is nil when a quorum confirmed.
	EventRelease
	// EventExtend: a Lease.Extend call ended; Err is nil when it won.
	EventExtend
	// EventRenewal: one of the watchdog's extension rounds for a lease was
	// decided. Err is nil when it won in time; otherwise the watchdog tries
	// again until the lease's safety deadline.
	EventRenewal
	// EventLost: a lease was lost; Err (matching ErrLeaseLost) says why, and
	// Duration is how long it had been held.
	EventLost
	// EventMasterDown: a master is suspected down (it failed or did not
	// answer within the master timeout); Err says why. Its requests fail at
	// once until it answers a probe.
	EventMasterDown
	// EventMasterUp: a master suspected down answered a probe and counts
	// again; Duration is how long it was out.
	EventMasterUp
	// EventMasterFenced: a master does not count toward any quorum: it
	// restarted or was promoted (see WithRestartFence), for Duration, or it
	// is a replica or failed a check under WithStrictMasters, until a check
	// passes (Duration 0 when that is the only reason). Err (matching
	// ErrMasterFenced) says why. It is reported when the fence begins or
	// its reasons change.
	EventMasterFenced
	// EventMasterUnfenced: a fenced master counts again; Duration is how
	// long it was fenced.
	EventMasterUnfenced
	// EventMasterWarning: a master failed a check (see WithStrictMasters)
	// and counts anyway; Err says what is wrong. It is reported on every
	// new connection and when the master's problems change.
	EventMasterWarning
)

var eventNames = [...]string{"", "acquire", "retry", "wait", "release", "extend", "renewal", "lost", "master-down", "master-up",
	"master-fenced", "master-unfenced", "master-warning"}

// String returns the kind's name: "acquire", "retry", "wait", "release",
// "extend", "renewal", "lost", "master-down", "master-up", "master-fenced",
// "master-unfenced" or "master-warning".
func (k EventKind) String() string {
	if int(k) < len(eventNames) && k != 0 {
		return eventNames[k]
	}
	return "unknown"
}

// Event is one thing that happened in a Client, as given to the function set
// with WithObserver and written to the logger set with WithLogger.
type Event struct {
	Kind EventKind
	// Name is the lock's name as Lease.Name gives it ("name[i]" for slot i
	// of a Slots, whose wait and retry events carry the Slots' name); ""
	// for master events.
	Name string
	// Master is the master's address (without its password) for master
	// events; "" otherwise.
	Master string
	// Duration is the round's duration for acquire, release, extend and
	// renewal events, the longest wait before the next attempt for retry,
	// how long the lease was held for lost, and how long the master was out
	// for master-up.
	Duration time.Duration
	// Agreed is the number of masters that did what was asked, for round
	// events; Masters is the number of masters.
	Agreed, Masters int
	// Dissent lists the masters that answered no or failed in a round
	// event, and why; nil when none did (a master not yet heard from when
	// the round was decided is not listed).
	Dissent []*MasterError
	// Err is nil for a round that won; otherwise why it did not, why a
	// lease was lost, or why a master is suspected down.
	Err error
}

// WithObserver sets a function called with every Event of the Client: each
// acquire, retry, wait, release, extend, renewal, loss, and master state
// change. It runs on a goroutine of its own, one per Client, which delivers
// the events in the order they happened (those of one lease, and of one
// master, in particular), never on the goroutine that did the work: a slow
// or blocked observer delays no lock, no renewal and no loss, and it may
// call anything in the library, Close included. Events wait for it in a
// queue of up to 65 536; beyond that they are dropped and counted
// (Stats.EventsDropped). A panic in it is recovered and logged (WithLogger)
// and delivery goes on. Close waits, at most the master timeout, for the
// events queued before it (the leases it ended among them) to be delivered;
// none is delivered after those. With no observer and no logger nothing is
// built: an event costs one branch, and a no-op observer adds no
// allocation. Use it to feed metrics (Prometheus, OpenTelemetry) or traces.
// Default: none.
func WithObserver(f func(Event)) ClientOption {
	return func(c *clientConfig) { c.observer = f }
}

// WithLogger sets a structured logger for what an operator needs to know:
// a master suspected down (Warn) and answering again (Info), a master fenced
// (Warn) or failing a check (Warn) and counting again (Info), a lease whose
// renewal fails (Warn) and recovers (Info), a lease lost (Warn; Debug when
// Close ended it), a failure that retrying cannot fix (Error), and at Debug
// every round. Records carry the lock's name ("lock"), the master ("master"),
// the error ("err") and durations; never a password or a token. Default: no
// logging.
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *clientConfig) { c.logger = l }
}

// maxQueuedEvents bounds the events waiting for the observer (a variable
// for tests).
var maxQueuedEvents = 1 << 16

// observer delivers a Client's events to its observer function and logger,
// in order, on its own goroutine (started by start, ended by stop).
type observer struct {
	fn  func(Event)
	log *slog.Logger
	on  bool // fn or log is set: build events

	mu      sync.Mutex
	queue   []queued // events waiting for the loop
	spare   []queued // the loop's last batch, for reuse
	closing bool     // stop was called: end once the queue is empty
	ended   bool     // the loop returned: report drops events
	wake    chan struct{}
	done    chan struct{} // closed when the loop returns
	dropped atomic.Uint64

	lastPermanent map[string]time.Time // the loop's: when a master's permanent failure was last logged
}

// queued is an event and what else the logger says about it.
type queued struct {
	ev   Event
	note uint8 // noteFailing or noteRecovered for a renewal
}

const (
	noteFailing   = 1 // the lease's renewal started failing
	noteRecovered = 2 // the lease's renewal recovered
)

func newObserver(cfg *clientConfig) *observer {
	return &observer{fn: cfg.observer, log: cfg.logger, on: cfg.observer != nil || cfg.logger != nil}
}

// start starts the delivery goroutine, if anyone listens.
func (o *observer) start() {
	if !o.on {
		return
	}
	o.wake, o.done = make(chan struct{}, 1), make(chan struct{})
	o.lastPermanent = make(map[string]time.Time)
	go o.loop()
}

// stop ends delivery once the events queued so far are delivered, and
// waits for that at most wait.
func (o *observer) stop(wait time.Duration) {
	if !o.on {
		return
	}
	o.mu.Lock()
	o.closing = true
	o.mu.Unlock()
	o.poke()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-o.done:
	case <-t.C:
	}
}

func (o *observer) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// report queues ev for delivery. It never blocks and never calls the
// observer; it may be called with library locks held.
func (o *observer) report(ev Event) { o.reportNote(ev, 0) }

func (o *observer) reportNote(ev Event, note uint8) {
	o.mu.Lock()
	if o.ended || len(o.queue) >= maxQueuedEvents {
		o.mu.Unlock()
		o.dropped.Add(1)
		return
	}
	o.queue = append(o.queue, queued{ev, note})
	o.mu.Unlock()
	o.poke()
}

// loop delivers the queued events in order until stop, once the queue is
// empty.
func (o *observer) loop() {
	defer close(o.done)
	for range o.wake {
		for {
			o.mu.Lock()
			batch := o.queue
			if len(batch) == 0 {
				if o.closing {
					o.ended = true
					o.mu.Unlock()
					return
				}
				o.mu.Unlock()
				break
			}
			o.queue = o.spare[:0]
			o.mu.Unlock()
			for i := range batch {
				o.deliver(batch[i])
				batch[i] = queued{} // let the event's errors be collected
			}
			o.mu.Lock()
			o.spare = batch[:0]
			o.mu.Unlock()
		}
	}
}

// deliver gives one event to the observer and the logger. A panic in
// either is recovered and logged.
func (o *observer) deliver(q queued) {
	defer func() {
		if v := recover(); v != nil && o.log != nil {
			func() {
				defer func() { _ = recover() }() // a logger that panics too
				o.log.LogAttrs(context.Background(), slog.LevelError, "distlock: observer panicked",
					slog.String("event", q.ev.Kind.String()), slog.Any("panic", v))
			}()
		}
	}()
	if o.fn != nil {
		o.fn(q.ev)
	}
	if o.log != nil {
		o.logEvent(q.ev)
		switch q.note {
		case noteFailing:
			o.logRenewal(q.ev.Name, true, q.ev.Err)
		case noteRecovered:
			o.logRenewal(q.ev.Name, false, nil)
		}
		o.logPermanent(q.ev)
	}
}

// permanentEvery bounds how often a master's permanent failure in a round
// that others won is logged.
const permanentEvery = time.Minute

// logPermanent logs at Error, at most once a minute per master, a master
// that failed a round for a reason retrying cannot fix (a wrong password
// on one master) even when the round won without it.
func (o *observer) logPermanent(ev Event) {
	if errors.Is(ev.Err, ErrPermanent) {
		return // logged with the event
	}
	for _, d := range ev.Dissent {
		if !errors.Is(d.Err, ErrPermanent) {
			continue
		}
		if last, ok := o.lastPermanent[d.Addr]; ok && time.Since(last) < permanentEvery {
			continue
		}
		o.lastPermanent[d.Addr] = time.Now()
		o.log.LogAttrs(context.Background(), slog.LevelError, "distlock: master failing for a reason retrying cannot fix",
			slog.String("master", d.Addr), slog.String("lock", ev.Name), slog.String("err", d.Err.Error()))
	}
}

// logEvent writes ev at its level: what an operator must see at Warn and
// above, every round at Debug.
func (o *observer) logEvent(ev Event) {
	level, msg := slog.LevelDebug, ""
	switch ev.Kind {
	case EventMasterDown:
		level, msg = slog.LevelWarn, "distlock: master suspected down"
	case EventMasterUp:
		level, msg = slog.LevelInfo, "distlock: master answers again"
	case EventMasterFenced:
		level, msg = slog.LevelWarn, "distlock: master fenced"
	case EventMasterUnfenced:
		level, msg = slog.LevelInfo, "distlock: master counts again"
	case EventMasterWarning:
		level, msg = slog.LevelWarn, "distlock: master failed a check"
	case EventLost:
		level, msg = slog.LevelWarn, "distlock: lease lost"
		if errors.Is(ev.Err, ErrClosed) {
			level = slog.LevelDebug
		}
	case EventRenewal:
		msg = "distlock: renewal"
	case EventAcquire:
		msg = "distlock: acquire round"
	case EventRetry:
		msg = "distlock: retry"
	case EventWait:
		msg = "distlock: waiting for release"
	case EventRelease:
		msg = "distlock: release round"
	case EventExtend:
		msg = "distlock: extend round"
	}
	if ev.Err != nil && errors.Is(ev.Err, ErrPermanent) && ev.Kind != EventLost {
		level, msg = slog.LevelError, "distlock: failure that retrying cannot fix"
	}
	ctx := context.Background()
	if !o.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 6)
	if ev.Name != "" {
		attrs = append(attrs, slog.String("lock", ev.Name))
	}
	if ev.Master != "" {
		attrs = append(attrs, slog.String("master", ev.Master))
	}
	if ev.Masters > 0 && ev.Kind != EventLost && ev.Kind != EventWait && ev.Kind != EventRetry {
		attrs = append(attrs, slog.Int("agreed", ev.Agreed), slog.Int("masters", ev.Masters))
	}
	if ev.Duration != 0 {
		attrs = append(attrs, slog.Duration("duration", ev.Duration))
	}
	if ev.Err != nil {
		attrs = append(attrs, slog.String("err", ev.Err.Error()))
	}
	o.log.LogAttrs(ctx, level, msg, attrs...)
}

// logRenewal writes the renewal news an operator needs, apart from the
// Debug record of every round: a lease whose renewal starts failing (Warn)
// and recovers (Info).
func (o *observer) logRenewal(name string, failing bool, err error) {
	if o.log == nil {
		return
	}
	if failing {
		o.log.LogAttrs(context.Background(), slog.LevelWarn, "distlock: lease renewal failing; retrying until the safety deadline",
			slog.String("lock", name), slog.String("err", err.Error()))
		return
	}
	o.log.LogAttrs(context.Background(), slog.LevelInfo, "distlock: lease renewal recovered", slog.String("lock", name))
}

// roundEvent returns the event of a decided round of kind k that took d.
// The dissent is built only here, when someone listens.
func roundEvent(k EventKind, t *tally, d time.Duration, err error) Event {
	ev := Event{Kind: k, Name: t.name, Duration: d, Agreed: t.yes, Masters: t.n, Err: err}
	if t.no+t.failed > 0 {
		for i := range t.n {
			if v := t.vote(i); v == voteNo || v == voteFailed {
				ev.Dissent = append(ev.Dissent, &MasterError{Addr: t.c.masters[i].addr, Err: t.errOf(i)})
			}
		}
	}
	return ev
}
