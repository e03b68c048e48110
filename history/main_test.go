//go:build linux

// Package history checks distlock's mutual exclusion and fencing from the
// outside, as a history checker: K client processes (this test binary,
// re-executed) lock one name over N=5 redis-server masters, each through a
// fault-injecting proxy, and write with their fencing token to a fenced
// resource kept by the parent test, while a seeded schedule pauses, kills,
// restarts and fails over masters, delays and cuts links, and stops client
// processes for longer than their TTL (Kleppmann's pause). Every client
// reports what it did as JSON lines with wall-clock times; afterwards the
// checker looks for two critical sections that overlap while neither holder
// had been told of a loss, a fenced write accepted out of token order, a
// token not greater than every earlier one, a lock key left on a master
// after every client closed, and a goroutine left in the parent.
//
// The CI profile (one seed, about 10s of faults) runs with the package:
//
//	go test -race ./history
//
// The long profile runs several seeds for longer:
//
//	go test ./history -run 'TestHistory$' -long -seeds 20 -duration 60s -timeout 0
//
// (`make history` runs it.)
//
// A failing run prints its seed; replay it with
//
//	go test ./history -run 'TestHistory$' -seed N [-duration D]
//
// A seed replays the schedule: the same faults, on the same masters, links
// and clients, for the same durations (a client pause aims at whichever
// client holds the lock at that moment). The clients' timing against it
// differs from run to run, so a violation may need a few replays.
//
// TestHistoryRestartFence shows that the checker can fail: with the
// client's restart fence off (distlock.WithoutRestartFence), restarting the
// masters that hold the lock one after the other lets a second client in
// while the first still holds it, and the checker must find that double
// grant; with the fence on (the default) the same schedule must show none.
// TestCheckerFinds feeds the checker made-up histories with each kind of
// violation.
//
// The clients run with distlock.WithRestartFence(0): the fence lasts their
// lock's TTL plus drift, as the library's rule says, instead of the default
// floor of DefaultTTL, which would keep every restarted master out of a
// sub-second-TTL run for ten seconds.
package history

import (
	"flag"
	"testing"

	"go.uber.org/goleak"
)

var (
	flagSeed     = flag.Uint64("seed", 0, "seed of the fault schedule (0: a random one, printed)")
	flagLong     = flag.Bool("long", false, "run the long profile: -seeds seeds of -duration each")
	flagSeeds    = flag.Int("seeds", 20, "with -long: how many seeds to run (from -seed, or a random one, upward)")
	flagDuration = flag.Duration("duration", 0, "how long the faults run per seed (default 10s, with -long 60s)")
	flagClients  = flag.Int("clients", 8, "client processes")
	flagFenceOff = flag.Bool("fence-off", false, "run TestHistory's clients without the restart fence (it should then fail: a way to see what the schedule finds)")
)

func TestMain(m *testing.M) {
	// Client processes (see TestHistoryClientProcess) run this too: a
	// goroutine left behind by a closed Client fails them as well.
	goleak.VerifyTestMain(m)
}
