package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"

	"github.com/distlock/distlock"
)

// electHelp is the synopsis and description of distlock elect.
const electHelp = `
Usage: distlock elect [flags] NAME -- COMMAND [ARGS...]

Campaigns in the election NAME and runs COMMAND only while this process is
the leader. Start it on every host; one of them runs COMMAND at a time.

When leadership is lost (too few masters could be reached to renew it),
COMMAND gets SIGTERM --stop-margin (default ttl/5) before anyone else could
be elected, then SIGKILL after --grace (default: the same margin);
distlock waits for it and campaigns again, and starts
COMMAND again when it is elected again. When COMMAND exits on its own while
leading, distlock resigns and exits with COMMAND's status (let a supervisor
restart it). SIGINT, SIGTERM and SIGHUP are forwarded to COMMAND as run
forwards them (and on Linux COMMAND dies with distlock); once it has exited,
distlock resigns and exits with its status (with 128+N when no command was
running).

The leader's value, shown by 'distlock observe NAME', is --id (default
hostname:pid). COMMAND gets DISTLOCK_NAME and DISTLOCK_ID in its environment.
Only COMMAND itself is signalled: a shell that starts other processes should
pass the signal on (exec, or trap).
`

// electExamples is the end of distlock elect's help.
const electExamples = `
Examples:
  # On every host: exactly one of them runs the scheduler at a time; another
  # takes over within about one TTL when the leader's host dies.
  distlock elect --servers r1:6379,r2:6379,r3:6379 --ttl 5s scheduler -- ./scheduler

  # Watch the election from anywhere.
  distlock observe --servers r1:6379,r2:6379,r3:6379 scheduler

Exit status:
  the command's status when it exited on its own or after a forwarded signal
  64   usage error
  69   campaigning failed (credentials refused, client closed), or another failure
  126  the command is not executable
  127  the command was not found
  128+N  distlock got signal N while no command was running
`

// electFlags are distlock elect's own flags.
type electFlags struct {
	common  commonFlags
	id      string
	stop    stopFlags
	verbose bool
}

// cmdElect is distlock elect: see electHelp.
func cmdElect(args []string) int {
	fs := newFlagSet("elect")
	var f electFlags
	f.common.register(fs, true)
	host, _ := os.Hostname()
	fs.StringVar(&f.id, "id", fmt.Sprintf("%s:%d", host, os.Getpid()), "this candidate's value, shown to observers")
	f.stop.register(fs)
	fs.BoolVar(&f.verbose, "verbose", false, "report each leadership gained and the command's start on stderr")
	fs.BoolVar(&f.verbose, "v", false, "short for --verbose")
	help := helpFunc(fs, electHelp, electExamples)

	pos, command, dashdash, err := parseArgs(fs, args)
	if err == nil {
		rf := runFlags{common: f.common, stop: f.stop, conflictCode: exitConflict, lostCode: exitLost}
		err = checkRunArgs(&rf, fs.Name(), pos, command, dashdash)
	}
	if err != nil {
		return parseFailed("elect", err, help)
	}
	return runElected(&f, pos[0], command)
}

// runElected campaigns for name and runs command while leading; it returns
// the exit status.
func runElected(f *electFlags, name string, command []string) int {
	path, client, code := prepare(&f.common, command)
	if client == nil {
		return code
	}
	defer client.Close()
	e, err := distlock.NewElection[string](client, name, nil, f.stop.lockOptions(f.common.ttl)...)
	if err != nil {
		errorf("%v", err)
		return exitUsage
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu       sync.Mutex
		running  *child    // the command while it runs
		stopping os.Signal // the first SIGINT or SIGTERM received
		final    = -1      // the exit status, once decided
	)
	sigs := notifySignals()
	// Not signal.Stop: a second signal arriving while distlock exits
	// would then kill it instead of being ignored.
	defer signal.Ignore(forwardedSignals...)
	go func() {
		for {
			select {
			case s := <-sigs:
				mu.Lock()
				if stopping == nil {
					stopping = s
				}
				ch := running
				mu.Unlock()
				if ch != nil {
					ch.forward(s) // its exit ends Run
				} else {
					cancel()
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	lead := func(lctx context.Context) error {
		mu.Lock()
		if stopping != nil {
			mu.Unlock()
			return nil // ctx is cancelled: Run steps down and returns
		}
		ch, err := startChild(path, command, map[string]string{
			"DISTLOCK_NAME": name,
			"DISTLOCK_ID":   f.id,
		})
		if err != nil {
			final = startStatus(err)
			mu.Unlock()
			errorf("%v", err)
			cancel()
			return err
		}
		running = ch
		mu.Unlock()
		if f.verbose {
			errorf("leading %s as %q: started the command (pid %d)", name, f.id, ch.cmd.Process.Pid)
		}
		exited := false
		select {
		case <-ch.done:
			exited = true // on its own or after a forwarded signal: resign and exit
		case <-lctx.Done():
			grace := f.stop.graceFor(f.common.ttl)
			errorf("leadership of %s lost (%v): sending SIGTERM to the command (SIGKILL in %s)", name, context.Cause(lctx), grace)
			stopChild(ch, grace, nil) // signals that arrive meanwhile are forwarded above
		}
		mu.Lock()
		defer mu.Unlock()
		running = nil
		if exited || stopping != nil {
			final = ch.status()
			cancel()
		} else if f.verbose {
			errorf("the command exited (status %d); campaigning again for %s", ch.status(), name)
		}
		return nil
	}
	if f.verbose {
		errorf("campaigning for %s as %q", name, f.id)
	}
	err = e.Run(ctx, f.id, lead)

	mu.Lock()
	defer mu.Unlock()
	switch {
	case final >= 0:
		if f.verbose {
			errorf("resigned %s", name)
		}
		return final
	case stopping != nil:
		return signalStatus(stopping)
	case err != nil && !errors.Is(err, context.Canceled):
		errorf("%s: %v", name, err)
	}
	return exitUnavailable
}
