// Package distlock is a distributed lock on Redis: the Redlock algorithm over
// N independent masters, with leases that report their own end.
//
// A Client holds one connection pool per master, built once and shared by
// every lock. A Mutex names a lock; Lock and TryLock return a Lease, held
// until Unlock or until it is lost:
//
//	c, err := distlock.NewClient([]string{"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"})
//	...
//	defer c.Close()
//	m, err := c.NewMutex("orders:42", distlock.WithTTL(10*time.Second))
//	...
//	lease, err := m.Lock(ctx)
//	...
//	defer lease.Unlock(ctx)
//
// Client.Do runs a function under a lock, like a context manager.
//
// Typed layers build on the same rounds: Guarded[T] (a value only the
// lock's holder writes, fenced by its token), Election[T], Slots[T] and
// Semaphore (each of a fixed set of values leased by one holder at a time),
// RWMutex (shared readers, one writer, writers not starved), MultiMutex
// (several names as one lease, without deadlock) and WithMinHold (a job run
// once per window across a fleet).
//
// # The algorithm
//
// An acquire round sends SET key token NX PX ttl to every master at once and
// ends as soon as a quorum (N/2+1) accepted it or as soon as a quorum is
// impossible; a slow or dead master is not waited for. The lease is valid
// until t0 + ttl - drift, where t0 is the start of the round and
// drift = ttl*0.01 + 2ms, and only if that moment is still ahead when the
// round ends. A failed round deletes its token on every master that may hold
// it, including one whose reply was lost. Unlock and Extend act only on keys
// that still hold the lease's token.
//
// # Keys
//
// The lock key is the name itself. Every other key and channel the library
// writes (the fencing counter, Guarded values, Election records, release
// announcements) starts with "__distlock:", a prefix no lock name may use,
// and carries the lock key's Redis Cluster hash tag, so every script touches
// one slot. The README lists them.
//
// # Errors
//
// A failed acquisition matches ErrNotAcquired and its reason: ErrLocked, a
// *QuorumError naming every master that did not agree, ctx.Err(), or
// ErrPermanent when a master refused for a reason that retrying cannot fix
// (credentials, ACL, database index, a key of another type). Lock retries
// transient failures (timeouts, refused connections, LOADING, BUSY) until
// its context ends, and stops at once when permanent failures alone leave no
// quorum possible.
//
// # Observability
//
// Silent by default. WithLogger writes what an operator must see (a master
// suspected down and back, a renewal failing and recovering, a lease lost,
// a failure that retrying cannot fix) to a *slog.Logger; WithObserver is
// called with every Event (acquire, retry, wait, release, extend, renewal,
// lost, master down and up) for metrics; Client.Stats returns the state of
// each master, the leases held and the waiters; Client.Inspect reads what
// each master holds for one lock. The distlock command (cmd/distlock) runs
// a command under a lock, shows a lock's status, elects and benchmarks.
//
// # Safety caveats
//
// Redlock's guarantee rests on timing assumptions: that clocks on the
// client and on the masters advance at about the same rate (the drift
// allowance covers small differences, not jumps of a master's clock or an
// operator's changes), and that a holder that stops watching Done (paused by
// GC, swap or a stopped VM) does not touch the protected resource after its
// validity ended. A process paused past Until can still believe it holds the
// lock; only a check at the resource (a fencing token) can stop its late
// writes. Treat the lock as an efficiency guarantee, or add fencing.
//
// Masters must be independent (no replication between them) and should keep
// their data across restarts, or stay down for a TTL after a crash before
// they rejoin: a master that restarts empty can let a second holder reach a
// quorum while the first is still valid. With N masters the lock survives
// (N-1)/2 of them failing.
package distlock
