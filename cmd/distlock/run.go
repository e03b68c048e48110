package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/distlock/distlock"
)

// runHelp is the synopsis and description of distlock run.
const runHelp = `
Usage: distlock run [flags] NAME -- COMMAND [ARGS...]

Acquires the lock NAME on a quorum of the masters, runs COMMAND while holding
it (the lease is renewed every ttl/3) and releases it when COMMAND exits.
distlock exits with COMMAND's exit status.

By default distlock waits for the lock as long as it takes; --wait D gives
up after D, --no-wait after one attempt (exit status 75, or -E N). A busy
lock is reported on stderr only with --verbose, so that a job started on
many hosts at once stays quiet on the hosts that did not get the lock.

COMMAND gets distlock's environment plus DISTLOCK_NAME (the lock's name) and
DISTLOCK_TOKEN (the fencing token: a number greater than that of every earlier
holder of NAME; pass it to the resource you protect so that it can refuse a
late write from an older holder). stdin, stdout and stderr are passed through;
SIGINT, SIGTERM and SIGHUP sent to distlock are forwarded to COMMAND (a
Ctrl-C typed at the terminal reached COMMAND already and is not sent twice;
those signals sent to distlock before COMMAND starts end distlock with
128+N). On Linux, COMMAND is killed if distlock itself dies (kill -9, the
OOM killer): nothing would renew the lock.

If the lease is lost while COMMAND runs (too few masters could be reached
to renew it), COMMAND gets SIGTERM --stop-margin (default ttl/5) before the
lock could expire and be taken by someone else, then SIGKILL after --grace
(default: the same margin, so that COMMAND is gone by the time the lock
could expire), and distlock exits with 79 (--lost-exit-code). Only COMMAND itself is signalled: a shell that starts
other processes should pass the signal on (exec, or trap).

With --min-hold D the lock stays taken until D after its acquisition even
when COMMAND ends sooner: a job started from cron on every host of a fleet,
with --no-wait --min-hold 5m, runs once per window.
`

// runExamples is the end of distlock run's help.
const runExamples = `
Examples:
  # Only one host runs the report at a time; the others wait their turn.
  distlock run --servers r1:6379,r2:6379,r3:6379 nightly-report -- ./report.sh

  # From cron on every host: the first one runs it, the others skip it
  # quietly; nobody runs it again within 5 minutes.
  DISTLOCK_SERVERS=r1:6379,r2:6379,r3:6379 \
    distlock run --no-wait --min-hold 5m backup -- /usr/local/bin/backup

  # Wait at most 30s, with the password from a file and TLS.
  distlock run --wait 30s --password-file /etc/distlock/pw --tls \
    --cacert /etc/ssl/redis-ca.pem deploy -- sh -c 'echo token $DISTLOCK_TOKEN'

` + exitStatusHelp

// runFlags are distlock run's own flags.
type runFlags struct {
	common       commonFlags
	wait         time.Duration
	noWait       bool
	conflictCode int
	lostCode     int
	stop         stopFlags
	minHold      time.Duration
	verbose      bool
}

// cmdRun is distlock run: see runHelp.
func cmdRun(args []string) int {
	fs := newFlagSet("run")
	var f runFlags
	f.common.register(fs, true)
	fs.DurationVar(&f.wait, "wait", 0, "give up waiting for the lock after this long (0: wait as long as it takes)")
	fs.BoolVar(&f.noWait, "no-wait", false, "try once: if the lock is taken, exit at once with the conflict status")
	fs.BoolVar(&f.noWait, "n", false, "short for --no-wait")
	fs.IntVar(&f.conflictCode, "conflict-exit-code", exitConflict, "exit status when the lock is held by someone else")
	fs.IntVar(&f.conflictCode, "E", exitConflict, "short for --conflict-exit-code")
	fs.IntVar(&f.lostCode, "lost-exit-code", exitLost, "exit status when the lease is lost while the command runs")
	f.stop.register(fs)
	fs.DurationVar(&f.minHold, "min-hold", 0, "keep the lock taken at least this long after acquisition, even if the command ends sooner")
	fs.BoolVar(&f.verbose, "verbose", false, "report acquisition, release and a busy lock on stderr")
	fs.BoolVar(&f.verbose, "v", false, "short for --verbose")
	help := helpFunc(fs, runHelp, runExamples)

	pos, command, dashdash, err := parseArgs(fs, args)
	if err == nil {
		err = checkRunArgs(&f, fs.Name(), pos, command, dashdash)
	}
	if err != nil {
		return parseFailed("run", err, help)
	}
	return runLocked(&f, pos[0], command)
}

// checkRunArgs checks the arguments of run and elect (named cmd): exactly
// one NAME, then "--" and a command, and valid statuses and durations.
func checkRunArgs(f *runFlags, cmd string, pos, command []string, dashdash bool) error {
	switch {
	case len(pos) == 0:
		return usagef("missing NAME")
	case len(pos) > 1 && !dashdash:
		return usagef("missing -- between NAME and COMMAND")
	case len(pos) > 1:
		return usagef("one NAME expected before --, got %d", len(pos))
	case len(command) == 0:
		return usagef("missing COMMAND after NAME --")
	case f.conflictCode < 0 || f.conflictCode > 255:
		return usagef("--conflict-exit-code %d: must be 0-255", f.conflictCode)
	case f.lostCode < 0 || f.lostCode > 255:
		return usagef("--lost-exit-code %d: must be 0-255", f.lostCode)
	case f.wait < 0:
		return usagef("--wait %v: must not be negative", f.wait)
	case f.noWait && f.wait > 0:
		return usagef("--wait and --no-wait exclude each other")
	}
	return f.stop.check(f.common.ttl)
}

// runLocked acquires name, runs command under the lease and returns the exit
// status.
func runLocked(f *runFlags, name string, command []string) int {
	path, client, code := prepare(&f.common, command)
	if client == nil {
		return code
	}
	defer client.Close()
	opts := f.stop.lockOptions(f.common.ttl)
	if f.minHold > 0 {
		opts = append(opts, distlock.WithMinHold(f.minHold))
	}
	m, err := client.NewMutex(name, opts...)
	if err != nil {
		errorf("%v", err)
		return exitUsage
	}

	sigs := notifySignals()
	// Not signal.Stop: a second signal arriving while distlock exits
	// would then kill it instead of being ignored.
	defer signal.Ignore(forwardedSignals...)

	lease, sig, err := acquire(m, f.noWait, f.wait, 2*f.common.masterTimeout+f.common.dialTimeout, sigs)
	if sig != nil {
		if lease != nil {
			release(lease, f.common.masterTimeout, false)
		}
		return signalStatus(sig)
	}
	if err != nil {
		if errors.Is(err, distlock.ErrLocked) {
			if f.verbose {
				errorf("%s is held by someone else: %v", name, err)
			}
			return f.conflictCode
		}
		errorf("%s: %v", name, err)
		return exitUnavailable
	}

	tctx, cancel := context.WithTimeout(lease.Context(), f.common.ttl)
	token, err := lease.Token(tctx)
	cancel()
	if err != nil {
		lost := lease.Err() != nil
		errorf("%s: fencing token: %v", name, err)
		release(lease, f.common.masterTimeout, false)
		if lost {
			return f.lostCode
		}
		return exitUnavailable
	}
	if f.verbose {
		errorf("acquired %s (token %d, valid until %s, renewed every %s)", name, token, lease.Until().Format(time.RFC3339Nano), (f.common.ttl / 3).Round(time.Millisecond))
	}

	select {
	case s := <-sigs: // arrived after the acquisition: do not start
		release(lease, f.common.masterTimeout, f.verbose)
		return signalStatus(s)
	default:
	}
	ch, err := startChild(path, command, map[string]string{
		"DISTLOCK_NAME":  name,
		"DISTLOCK_TOKEN": strconv.FormatUint(token, 10),
	})
	if err != nil {
		errorf("%v", err)
		release(lease, f.common.masterTimeout, f.verbose)
		return startStatus(err)
	}
	for {
		select {
		case <-ch.done:
			release(lease, f.common.masterTimeout, f.verbose)
			return ch.status()
		case s := <-sigs:
			ch.forward(s)
		case <-lease.Done():
			grace := f.stop.graceFor(f.common.ttl)
			errorf("lease on %s lost (%v): sending SIGTERM to the command (SIGKILL in %s)", name, lease.Err(), grace)
			stopChild(ch, grace, sigs)
			return f.lostCode
		}
	}
}

// acquire takes the lock: once with noWait, else waiting up to wait (0: no
// limit; when it runs out before any round answered, one more attempt
// bounded by lastTry). A SIGINT or SIGTERM from sigs stops the wait: it is returned as
// sig, with the lease if the lock was taken all the same.
func acquire(m *distlock.Mutex, noWait bool, wait, lastTry time.Duration, sigs <-chan os.Signal) (lease *distlock.Lease, sig os.Signal, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if wait > 0 {
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	acquired := make(chan struct{})
	watched := make(chan os.Signal, 1)
	go func() {
		defer close(watched)
		select {
		case s := <-sigs:
			watched <- s
			cancel()
		case <-acquired:
		}
	}()
	if noWait {
		lease, err = m.TryLock(ctx)
	} else {
		lease, err = m.Lock(ctx)
	}
	close(acquired)
	if s, ok := <-watched; ok {
		return lease, s, err
	}
	if err != nil && wait > 0 && !errors.Is(err, distlock.ErrLocked) && errors.Is(err, context.DeadlineExceeded) {
		// --wait ran out before a round told anything (a short wait, a slow
		// first round): one complete attempt, bounded by lastTry, says
		// whether the lock is busy, free, or the masters are failing.
		tctx, tcancel := context.WithTimeout(context.Background(), lastTry)
		defer tcancel()
		lease, err = m.TryLock(tctx)
	}
	return lease, nil, err
}

// stopChild stops ch after the lease was lost: SIGTERM now, SIGKILL after
// grace, forwarding the signals that arrive meanwhile. It waits for ch.
func stopChild(ch *child, grace time.Duration, sigs <-chan os.Signal) {
	ch.signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	for {
		select {
		case <-ch.done:
			return
		case s := <-sigs:
			ch.forward(s)
		case <-t.C:
			ch.signal(syscall.SIGKILL)
		}
	}
}

// release unlocks lease, waiting for the masters' answers at most a few
// master timeouts, and reports a failure (and with verbose, the release).
func release(lease *distlock.Lease, masterTimeout time.Duration, verbose bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*masterTimeout+time.Second)
	defer cancel()
	if err := lease.Unlock(ctx); err != nil {
		if lease.Err() != nil {
			return // lost: already reported
		}
		errorf("releasing %s: %v (its keys expire with the TTL)", lease.Name(), err)
		return
	}
	if verbose {
		errorf("released %s", lease.Name())
	}
}
