// Command distlock runs commands under a distributed lock (Redlock over N
// independent Redis masters), runs a command only on the elected leader,
// shows who holds a lock, watches an election and measures lock throughput.
//
// Usage:
//
//	distlock run [flags] NAME -- COMMAND [ARGS...]
//	distlock elect [flags] NAME -- COMMAND [ARGS...]
//	distlock status [--json] NAME...
//	distlock observe [--json] NAME
//	distlock bench [--local N] [--contended] [--concurrency N] [--duration D] [--json]
//	distlock version
//
// Each subcommand has --help, with its flags and examples.
//
// # Masters and credentials
//
// The masters come from --servers (a comma-separated list of host:port,
// redis://host:port/db, rediss://... for TLS, unix:///path), or from
// $DISTLOCK_SERVERS, or else 127.0.0.1:6379. The ACL user is --user; the
// password is read from the file given with --password-file, or else from
// $REDISCLI_AUTH. No flag takes a password, and an address with credentials
// (redis://user:password@...) is refused, so that a password never shows in
// ps. The command run by run and elect inherits distlock's environment,
// $REDISCLI_AUTH included. TLS is set with --tls, --cacert, --cert, --key,
// --tls-server-name and --insecure.
//
// # Exit statuses
//
// distlock run and distlock elect exit with the command's status when it ran
// and exited (128+N when it was killed by signal N). Their own statuses:
//
//	64   usage error (bad flags or arguments)
//	69   the lock could not be acquired for another reason than being busy:
//	     too few masters answered, credentials refused, --wait ran out
//	     while masters were failing; also any other failure of distlock itself
//	75   run only: not acquired because another holder has the lock
//	     (--no-wait, or --wait ran out); set another with -E N /
//	     --conflict-exit-code N
//	79   run only: the lease was lost while the command ran: the command got SIGTERM
//	     --stop-margin before the lock could expire (SIGKILL after --grace);
//	     set another with --lost-exit-code N
//	126  the command is not executable
//	127  the command was not found
//	128+N distlock itself was stopped by signal N (SIGINT, SIGTERM, SIGHUP)
//	     before the command started
//
// elect never gives 75 or 79: it campaigns until elected, and after a lost
// leadership it stops the command and campaigns again. SIGINT, SIGTERM and
// SIGHUP are forwarded to the command (not SIGINT, SIGQUIT or SIGHUP from
// the terminal distlock runs in the foreground of, which the command got
// already). On Linux the command is killed if distlock dies (kill -9, the
// OOM killer): nothing would renew its lock.
//
// distlock status, observe, bench and version exit with 0 on success, 64 on a
// usage error and 69 when the masters cannot be read.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// Exit statuses of distlock itself (see the package documentation).
const (
	exitOK          = 0
	exitUsage       = 64 // EX_USAGE
	exitUnavailable = 69 // EX_UNAVAILABLE: masters unavailable, or another failure
	exitConflict    = 75 // EX_TEMPFAIL: the lock is busy
	exitLost        = 79 // the lease was lost while the command ran
	exitNotExec     = 126
	exitNotFound    = 127
	exitSignalBase  = 128
)

// exitStatusHelp is the table of exit statuses shown by the --help of run
// and elect.
const exitStatusHelp = `Exit status:
  the command's own status when it ran and exited (128+N if killed by signal N)
  64   usage error
  69   not acquired for another reason than a busy lock (masters unavailable,
       credentials refused), or another failure of distlock
  75   not acquired: the lock is held by someone else (set with -E N)
  79   the lease was lost while the command ran; it got SIGTERM --stop-margin
       before the lock could expire, then SIGKILL after --grace (set with
       --lost-exit-code N)
  126  the command is not executable
  127  the command was not found
  128+N  distlock got signal N before the command started
`

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string) int
}

// commands lists the subcommands in the order the top-level help shows them.
var commands = []command{
	{"run", "run a command while holding a lock", cmdRun},
	{"elect", "run a command only while this process is the elected leader", cmdElect},
	{"status", "show who holds a lock on each master", cmdStatus},
	{"observe", "print each leader change of an election", cmdObserve},
	{"bench", "measure lock throughput and handoff latency", cmdBench},
	{"version", "print the version", cmdVersion},
}

// main runs the subcommand and exits with its status.
func main() {
	// The command dies with the thread that started it (childAttr): run
	// and elect start it from the main goroutine, kept on the main thread,
	// which ends only when distlock does.
	runtime.LockOSThread()
	os.Exit(dispatch(os.Args[1:]))
}

// dispatch runs the subcommand named by args[0] and returns the exit status.
func dispatch(args []string) int {
	if len(args) == 0 {
		topUsage(os.Stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			return dispatch([]string{args[1], "--help"})
		}
		topUsage(os.Stdout)
		return exitOK
	case "-version", "--version":
		return cmdVersion(nil)
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(args[1:])
		}
	}
	errorf("unknown command %q (try 'distlock --help')", args[0])
	return exitUsage
}

// topUsage prints the list of subcommands.
func topUsage(w io.Writer) {
	fmt.Fprintf(w, "distlock: distributed locks over N independent Redis masters (Redlock)\n\nUsage:\n  distlock COMMAND [flags] [ARGS]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'distlock COMMAND --help' for a command's flags and examples.

Example:
  distlock run --servers a:6379,b:6379,c:6379 --no-wait nightly-report -- ./report.sh
`)
}

// errorf prints a message prefixed with "distlock: " to stderr. The
// library's errors each start with "distlock: " too; inside the message
// those prefixes are left out.
func errorf(format string, args ...any) {
	fmt.Fprintln(os.Stderr, "distlock: "+cleanMsg(fmt.Sprintf(format, args...)))
}

// cleanMsg returns an error message without the "distlock: " prefixes that
// each of the library's wrapped errors adds.
func cleanMsg(msg string) string {
	return strings.ReplaceAll(strings.TrimPrefix(msg, "distlock: "), ": distlock: ", ": ")
}

// helpFunc returns a function that prints a subcommand's help: its synopsis
// and description (text), its flags, then examples and anything after them
// (tail).
func helpFunc(fs *flag.FlagSet, text, tail string) func(w io.Writer) {
	return func(w io.Writer) {
		fmt.Fprint(w, strings.TrimLeft(text, "\n"))
		fmt.Fprint(w, "\nFlags:\n")
		printDefaults(w, fs)
		fmt.Fprint(w, "\n"+strings.TrimLeft(tail, "\n"))
	}
}

// parseFailed handles an error of parseArgs (or a usage check after it) for
// the subcommand name: help goes to stdout with status 0, a usage error to
// stderr with status 64.
func parseFailed(name string, err error, help func(io.Writer)) int {
	if errors.Is(err, flag.ErrHelp) {
		help(os.Stdout)
		return exitOK
	}
	errorf("%s: %v", name, err)
	fmt.Fprintf(os.Stderr, "Run 'distlock %s --help' for usage.\n", name)
	return exitUsage
}
