package main

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/distlock/distlock"
)

// forwardedSignals are the signals distlock passes on to its command (and
// that end distlock itself while no command runs).
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// notifySignals starts delivering forwardedSignals to a new channel.
// The caller ignores them when it is done (signal.Ignore, not signal.Stop:
// a late second signal must not kill distlock as it exits).
func notifySignals() chan os.Signal {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, forwardedSignals...)
	return ch
}

// signalStatus returns the exit status of a process ended by sig: 128+N.
func signalStatus(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return exitSignalBase + int(s)
	}
	return exitSignalBase + 1
}

// lookCommand resolves the command name as the shell would (a name with a
// slash is a path, any other is looked up in $PATH). On failure it returns
// the status a shell would give: 127 not found, 126 found but not executable.
func lookCommand(name string) (string, int, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return path, 0, nil
	}
	if errors.Is(err, exec.ErrDot) {
		// A relative name found in the current directory through $PATH:
		// run it as a shell would.
		return path, 0, nil
	}
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return "", exitNotFound, err
	}
	return "", exitNotExec, err
}

// child is a running command.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the command has exited and was reaped
	err  error         // Wait's error; read after done
}

// startChild starts path with args (args[0] is the name the user typed),
// passing stdin, stdout and stderr through, with env added to distlock's
// own environment (replacing variables of the same name).
func startChild(path string, args []string, env map[string]string) (*child, error) {
	cmd := &exec.Cmd{
		Path:   path,
		Args:   args,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		// The command must not outlive distlock: nothing renews its lock
		// once distlock is gone.
		SysProcAttr: childAttr(),
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, replaced := env[k]; !replaced {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// signal sends sig to the command, if it still runs.
// forward passes on a signal distlock received, unless a terminal already
// delivered it to the command too (terminalDelivered).
func (c *child) forward(sig os.Signal) {
	if !terminalDelivered(sig) {
		c.signal(sig)
	}
}

func (c *child) signal(sig os.Signal) {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Signal(sig)
	}
}

// status returns the command's exit status, once it has exited: its own
// code, or 128+N when signal N killed it.
func (c *child) status() int {
	st := c.cmd.ProcessState
	if st == nil {
		return exitUnavailable
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalBase + int(ws.Signal())
	}
	return st.ExitCode()
}

// startStatus is the exit status for a command that could not be started:
// 127 when it is missing, 126 otherwise (not executable, bad format).
func startStatus(err error) int {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
		return exitNotFound
	}
	return exitNotExec
}

// stopFlags say how a command is stopped when its lease (or leadership)
// cannot be kept: --stop-margin and --grace, for run and elect.
type stopFlags struct {
	margin time.Duration // 0: ttl/5
	grace  time.Duration // 0: the margin
}

// register adds --stop-margin and --grace to fs.
func (s *stopFlags) register(set *flag.FlagSet) {
	set.DurationVar(&s.margin, "stop-margin", 0, "when the lease cannot be renewed, SIGTERM the command this long before the lock could expire (default: ttl/5)")
	set.DurationVar(&s.grace, "grace", 0, "after SIGTERM, SIGKILL the command after this long (default: the stop margin, so that it is gone\nbefore the lock could expire and another holder start)")
}

// check reports a negative duration, or a margin that leaves the watchdog
// too little time to renew a lock of the given TTL.
func (s *stopFlags) check(ttl time.Duration) error {
	switch {
	case s.margin < 0:
		return usagef("--stop-margin %v: must not be negative", s.margin)
	case s.margin >= ttl/2:
		return usagef("--stop-margin %v: must be under half of --ttl (%v)", s.margin, ttl)
	case s.grace < 0:
		return usagef("--grace %v: must not be negative", s.grace)
	}
	return nil
}

// marginFor returns the stop margin for a lock of the given TTL.
func (s *stopFlags) marginFor(ttl time.Duration) time.Duration {
	if s.margin > 0 {
		return s.margin
	}
	return ttl / 5
}

// graceFor returns the time between SIGTERM and SIGKILL for a lock of the
// given TTL.
func (s *stopFlags) graceFor(ttl time.Duration) time.Duration {
	if s.grace > 0 {
		return s.grace
	}
	return s.marginFor(ttl)
}

// lockOptions returns the options of the lock: its TTL, and the renewal
// margin at which the library declares the lease lost (the stop margin).
func (s *stopFlags) lockOptions(ttl time.Duration) []distlock.Option {
	return []distlock.Option{distlock.WithTTL(ttl), distlock.WithRenewalMargin(s.marginFor(ttl))}
}

// prepare finds command's executable and makes the Client of common, for
// run and elect. On failure it reports the error and returns the exit
// status (127 or 126 for the command, 64 for the flags) with a nil Client.
func prepare(common *commonFlags, command []string) (path string, client *distlock.Client, code int) {
	path, code, err := lookCommand(command[0])
	if err != nil {
		errorf("%v", err)
		return "", nil, code
	}
	if client, err = common.newClient(); err != nil {
		errorf("%v", err)
		return "", nil, exitUsage
	}
	return path, client, 0
}
