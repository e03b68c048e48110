package distlock

import (
	"context"
	"errors"
	"time"
)

// RWMutex is a named read-write lock over the Client's masters: many
// readers at once, or one writer. Each RLock and Lock returns its own Lease,
// renewed by the watchdog, lost and unlocked exactly like a Mutex's lease.
//
// A writer that waits bars new readers: once its Lock has found readers
// holding the lock, new RLock calls wait until it has had its turn (or
// given up), so a stream of readers cannot starve it; it gets in as soon as
// the readers that hold the lock release, or their leases expire (within a
// TTL of a reader's process dying). Writers do not bar each other: a writer
// that gets in lifts the bar, and one kept out by another writer sets none,
// so when a writer releases, the readers that wait and the next writer
// contend, and readers get turns between writers. A writer that dies while
// it waits bars readers for at most the TTL.
//
// On each master, the writer holds the lock key (the name, with its token,
// as a Mutex does) and the readers an entry each, with its expiry, in a
// reader set beside it (see the README's key layout); the quorum and
// validity rules are those of Mutex. A plain Mutex of the same name
// excludes writers and new readers, but does not wait for readers: do not
// use both on one name.
//
// An RWMutex is safe for concurrent use.
type RWMutex struct {
	r, w *Mutex
}

// writerKind is an RWMutex's writer: the lock key with its token, taken
// only where no reader is live.
var writerKind = lockKind{acquire: &writeAcquireOp, heal: acquireScript, release: &releaseOp, cleanUp: &cleanUpOp,
	extend: &extendOp, extendMany: extendManyScript, waits: true, withdraw: &withdrawOp, tokens: true}

// readerKind is an RWMutex's reader: its token in the reader set.
var readerKind = lockKind{acquire: &readAcquireOp, heal: rwReadScript, release: &readReleaseOp, cleanUp: &readCleanUpOp,
	extend: &readExtendOp, extendMany: rwReadExtendScript}

var (
	// writeAcquireOp and readAcquireOp answer as acquireOp: OK when taken,
	// else how long it stays busy.
	writeAcquireOp = op{name: "acquire", script: rwWriteScript, judge: judgeAcquire}
	readAcquireOp  = op{name: "acquire", script: rwReadScript, judge: judgeAcquire}
	// readReleaseOp answers as releaseOp (never -1).
	readReleaseOp = op{name: "release", script: rwReadRelease, gone: true, resend: true, judge: releaseOp.judge}
	readCleanUpOp = op{name: "release", script: rwReadRelease, all: true, resend: true, judge: releaseOp.judge}
	// readExtendOp: one lease's rw_read_extend.lua answer, {1} or {0}; the
	// watchdog's batches hand it each element.
	readExtendOp = op{name: "extend", script: rwReadExtendOne, judge: func(val any) (vote, error) {
		if a, ok := val.([]any); ok && len(a) == 1 {
			val = a[0]
		}
		return extendOp.judge(val)
	}}
	// withdrawOp lifts a waiting writer's bar on every master that has it.
	// It does not wait for a master that is slow to answer (a master that
	// is down gets it when it answers again).
	// Both answers mean our bar is no longer there (1: lifted now, 0: gone
	// or another writer's), so the round ends as soon as a quorum answered,
	// without waiting for a silent master.
	withdrawOp = op{name: "withdraw", script: rwWithdrawScript, gone: true, resend: true, judge: func(val any) (vote, error) {
		if v, ok := val.(int64); ok && (v == 0 || v == 1) {
			return voteYes, nil
		}
		return voteFailed, unexpected(val)
	}}
)

// NewRWMutex returns the read-write lock called name (the names allowed are
// those of NewMutex; opts apply to read and write leases alike). It checks
// the name and the options and returns an error naming the one that is
// invalid, or ErrClosed after Close; it does not touch the masters.
func (c *Client) NewRWMutex(name string, opts ...Option) (*RWMutex, error) {
	cfg, err := c.lockConfig(name, opts)
	if err != nil {
		return nil, err
	}
	ch := derivedKey(kindRelease, name)
	readers, bar := derivedKey(kindReaders, name), derivedKey(kindWriterWaits, name)
	w := c.newMutex(name, name, ch, cfg, &writerKind)
	w.acqKeys = []any{w.nameArg, readers, bar} // heals as a Mutex: healKeys stay nil
	r := c.newMutex(name, name, ch, cfg, &readerKind)
	r.keyArg = readers
	r.acqKeys = []any{readers, r.nameArg, bar}
	r.healKeys = r.acqKeys
	return &RWMutex{r: r, w: w}, nil
}

// Name returns the lock's name, which is also the key the writer holds.
func (rw *RWMutex) Name() string { return rw.w.name }

// Lock acquires the lock for writing, waiting and retrying as Mutex.Lock
// does, and returns the write lease. While it waits, new readers are barred
// (see RWMutex). Its errors are those of Mutex.Lock; ErrLocked means a
// writer or live readers held the lock.
func (rw *RWMutex) Lock(ctx context.Context) (*Lease, error) { return rw.w.Lock(ctx) }

// TryLock makes one write acquire round, as Mutex.TryLock does. It does not
// bar readers.
func (rw *RWMutex) TryLock(ctx context.Context) (*Lease, error) { return rw.w.TryLock(ctx) }

// RLock acquires the lock for reading, shared with other readers, waiting
// and retrying as Mutex.Lock does while a writer holds the lock or waits
// for it. Its errors are those of Mutex.Lock. The read lease has no fencing
// token: Lease.Token returns an error matching errors.ErrUnsupported.
func (rw *RWMutex) RLock(ctx context.Context) (*Lease, error) { return rw.r.Lock(ctx) }

// TryRLock makes one read acquire round, as Mutex.TryLock does.
func (rw *RWMutex) TryRLock(ctx context.Context) (*Lease, error) { return rw.r.TryLock(ctx) }

// Do locks for writing, runs fn, and unlocks, as Client.Do does.
func (rw *RWMutex) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	fnErr, endErr := rw.w.withLease(ctx, func(ctx context.Context, _ *Lease) error { return fn(ctx) })
	return errors.Join(fnErr, endErr)
}

// RDo locks for reading, runs fn, and unlocks, as Client.Do does.
func (rw *RWMutex) RDo(ctx context.Context, fn func(ctx context.Context) error) error {
	fnErr, endErr := rw.r.withLease(ctx, func(ctx context.Context, _ *Lease) error { return fn(ctx) })
	return errors.Join(fnErr, endErr)
}

// waitingWriter is one Lock call of an RWMutex's writer: its rounds carry
// the call's waiter id, with which a busy lock bars new readers.
type waitingWriter struct {
	m      *Mutex
	id     any
	barred bool // a round found the lock busy, and may have set the bar
}

func (a *waitingWriter) try(ctx context.Context, _ bool) (*Lease, time.Duration, error) {
	lease, heldFor, err := a.m.acquire(ctx, a.id, false)
	if err != nil && !errors.Is(err, ErrClosed) {
		a.barred = true
	}
	if err == nil && a.barred {
		// The winning round lifted the bar where it took the lock; a
		// master that refused it (a reader's release still on its way)
		// set the bar again. Lift it there too, without waiting: readers
		// are kept out by the writer's key on a quorum now.
		a.withdraw(false)
	}
	return lease, heldFor, err
}

// withdraw lifts the writer's bar on every master. With wait, it waits for
// the answers of a quorum at most (bounded by the master timeout) and
// reports whether a master lifted it; otherwise it waits for no answer and
// reports false.
func (a *waitingWriter) withdraw(wait bool) (lifted bool) {
	m, c := a.m, a.m.client
	var t tally
	t.init(c, m.kind.withdraw, m.name)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if !wait {
		for i := range t.n {
			t.setVote(i, notAwaited)
		}
	}
	t.run(ctx, []any{derivedKey(kindWriterWaits, m.name), a.id, m.channelArg, c.idArg})
	return t.hi == 1
}

func (a *waitingWriter) lockName() string { return a.m.name }

func (a *waitingWriter) exclusive() bool { return true }

// giveUp lifts the bar that the writer may have set, when its Lock gave up,
// and wakes this Client's waiting readers. It goes to every master and waits
// for answers from a quorum at most (bounded by the master timeout); a
// master that is down gets it when it answers again, and a bar left anyway
// expires within the TTL.
func (a *waitingWriter) giveUp() {
	if !a.barred {
		return
	}
	if a.withdraw(true) {
		a.m.client.notifier.released(a.m.channel) // wake this Client's readers: the announcement skips them
	}
}
