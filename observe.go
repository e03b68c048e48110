package distlock

import (
	"context"
	"errors"
	"log/slog"
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
)

var eventNames = [...]string{"", "acquire", "retry", "wait", "release", "extend", "renewal", "lost", "master-down", "master-up"}

// String returns the kind's name: "acquire", "retry", "wait", "release",
// "extend", "renewal", "lost", "master-down" or "master-up".
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
	// Name is the lock's name (its key: a slot's key for a Slots); "" for
	// master events.
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
// change. It is called synchronously, with no lock of the library held, on
// the goroutine that did the work: the caller's for acquire, retry, wait,
// release and extend; the watchdog's for renewal and loss; the master's
// probe for master changes (and Close's for what Close ends). So it must
// return quickly, and every renewal waits for it. It may call the Client
// (Stats, Inspect, locks), but not Close, which waits for the goroutines
// that call it: start Close in a goroutine of its own. Events of one lease,
// and of one master, come in order. With no observer nothing is built: an
// event costs one branch, and a no-op observer adds no allocation. Use it to
// feed metrics (Prometheus, OpenTelemetry) or traces. Default: none.
func WithObserver(f func(Event)) ClientOption {
	return func(c *clientConfig) { c.observer = f }
}

// WithLogger sets a structured logger for what an operator needs to know:
// a master suspected down (Warn) and answering again (Info), a lease whose
// renewal fails (Warn) and recovers (Info), a lease lost (Warn; Debug when
// Close ended it), a failure that retrying cannot fix (Error), and at Debug
// every round. Records carry the lock's name ("lock"), the master ("master"),
// the error ("err") and durations; never a password or a token. Default: no
// logging.
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *clientConfig) { c.logger = l }
}

// observer delivers a Client's events to its observer function and logger.
type observer struct {
	fn  func(Event)
	log *slog.Logger
	on  bool // fn or log is set: build events
}

func newObserver(cfg *clientConfig) observer {
	return observer{fn: cfg.observer, log: cfg.logger, on: cfg.observer != nil || cfg.logger != nil}
}

// report gives ev to the observer and the logger. No library lock may be
// held.
func (o *observer) report(ev Event) {
	if o.fn != nil {
		o.fn(ev)
	}
	if o.log != nil {
		o.logEvent(ev)
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
