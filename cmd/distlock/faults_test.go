package main

// Faults around the command: distlock's own death, terminals, masters that
// cannot be read, hostile flags. Most of these failed before the fixes of
// the adversarial review.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/distlock/distlock/distlocktest"
)

// reviewChildEnv selects a helper mode of the test binary, which the tests
// below run as distlock's COMMAND (sh coalesces signals that arrive while
// a foreground command runs, and so cannot count them).
const reviewChildEnv = "DISTLOCK_REVIEW_CHILD"

func init() {
	if os.Getenv(reviewChildEnv) == "countsig" {
		reviewCountSignals(os.Getenv("DISTLOCK_REVIEW_OUT"))
	}
}

// reviewCountSignals is a command that counts the SIGINT and SIGTERM it
// gets: it creates out+".started", and 1s after the first signal
// writes one line per signal to out and exits with the count. It exits
// with 100 if no signal came within 30s.
func reviewCountSignals(out string) {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	_ = os.WriteFile(out+".started", nil, 0o644)
	var got []string
	var settle <-chan time.Time
	timeout := time.After(30 * time.Second)
	for {
		select {
		case s := <-ch:
			got = append(got, s.String())
			if settle == nil {
				settle = time.After(time.Second)
			}
		case <-settle:
			_ = os.WriteFile(out, []byte(strings.Join(got, "\n")+"\n"), 0o644)
			os.Exit(len(got))
		case <-timeout:
			os.Exit(100)
		}
	}
}

// TestCtrlCInterruptsOnce: Ctrl-C at a terminal sends SIGINT to the whole
// foreground process group, distlock and the command alike; distlock does
// not forward its copy, so the command gets each interrupt once (many
// programs take a second one as "stop now, skip the cleanup"). distlock
// runs on a real pseudo-terminal here, as the session leader in its
// foreground, and the test types Ctrl-C on it.
func TestCtrlCInterruptsOnce(t *testing.T) {
	t.Parallel()
	_, srv := servers(t, 3)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"run", "elect"} {
		t.Run(cmd, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "signals")
			ptm, pts := openPTY(t)
			c := dlCommand(context.Background(), []string{reviewChildEnv + "=countsig", "DISTLOCK_REVIEW_OUT=" + out},
				cmd, srv, "ctrlc-"+cmd, "--", self)
			c.Stdin, c.Stdout, c.Stderr = pts, pts, pts
			c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				_ = c.Wait()
				close(done)
			}()
			t.Cleanup(func() {
				_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
				select {
				case <-done:
				case <-time.After(10 * time.Second):
				}
			})
			go func() { _, _ = io.Copy(io.Discard, ptm) }() // the terminal's screen
			if !waitFor(15*time.Second, func() bool { return exists(out + ".started") }) {
				t.Fatalf("the command did not start")
			}
			// Five presses, 100ms apart: two SIGINTs that arrive before the
			// first is delivered merge, so one press alone shows a duplicate
			// only most of the time.
			const presses = 5
			for range presses {
				if _, err := ptm.Write([]byte{3}); err != nil { // ^C
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("distlock did not exit")
			}
			code := c.ProcessState.ExitCode()
			got := strings.Fields(output(dir, "signals"))
			if len(got) != presses {
				t.Errorf("%d Ctrl-C: the command got %d SIGINTs (status %d), want %d", presses, len(got), code, presses)
			}
		})
	}
}

// openPTY opens a pseudo-terminal pair (Linux /dev/ptmx), closed at the end
// of the test.
func openPTY(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("this machine has no /dev/ptmx: no terminal to type Ctrl-C on")
	}
	if err != nil {
		t.Fatalf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, ptm.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal(e)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, ptm.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	return ptm, pts
}

// TestCommandDiesWithDistlock: when distlock itself dies (SIGKILL: the OOM
// killer, kill -9) the command dies with it, and on SIGHUP (the ssh session
// closed) it is forwarded: a command that outlived distlock would run
// unrenewed, and one TTL later another host would run it at the same time.
func TestCommandDiesWithDistlock(t *testing.T) {
	t.Parallel()
	_, srv := servers(t, 3)
	for _, tc := range []struct {
		cmd string
		sig syscall.Signal
	}{
		{"run", syscall.SIGKILL},
		{"run", syscall.SIGHUP},
		{"elect", syscall.SIGKILL},
	} {
		t.Run(tc.cmd+"-"+tc.sig.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			name := fmt.Sprintf("orphan-%s-%d", tc.cmd, tc.sig)
			pidFile := filepath.Join(dir, "pid")
			// The command ignores SIGHUP, as nohup'd or daemon-like
			// commands do; for SIGKILL it does not matter.
			script := fmt.Sprintf(`trap '' HUP; echo $$ > %s.tmp; mv %[1]s.tmp %[1]s; exec sleep 30`, pidFile)
			p := startBackground(t, dir, "dl", nil, tc.cmd, srv, "--ttl", "1s", name, "--", "sh", "-c", script)
			if !waitFor(15*time.Second, func() bool { return exists(pidFile) }) {
				t.Fatalf("the command did not start; stderr: %s", output(dir, "dl.stderr"))
			}
			pid, err := strconv.Atoi(strings.TrimSpace(output(dir, "pid")))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
			if err := p.cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			// Two TTLs: a lock that nobody renews has expired by then.
			time.Sleep(2500 * time.Millisecond)
			if !alive(pid) {
				return // the command is gone: fine
			}
			select {
			case <-p.done:
			default:
				// distlock still runs beside its command (it forwarded
				// SIGHUP, which the command ignores): fine if it still
				// holds the lock.
				if st := statusOf(t, srv, name); !st.Held {
					t.Errorf("distlock and its command run, but the lock is not held: %+v", st)
				}
				return
			}
			t.Logf("distlock exited with %d after %v", p.code, tc.sig)
			t.Errorf("the command (pid %d) still runs after distlock died of %v", pid, tc.sig)
			// The consequence: another run gets the lock within about one
			// TTL while the first command still runs.
			r := dl(t, nil, "run", srv, "--wait", "5s", name, "--", "true")
			if r.code == 0 && alive(pid) {
				t.Errorf("a second distlock run took %s while the first command (pid %d) still runs", name, pid)
			}
		})
	}
}

// TestServersRefuseCredentials: an address with credentials is refused
// (they would show in ps, and a lone "user@" is taken as the password),
// without echoing them; --user with $REDISCLI_AUTH is the way.
func TestServersRefuseCredentials(t *testing.T) {
	t.Parallel()
	s := newServerWithUser(t)
	for _, servers := range []string{"redis://alice@" + s, "redis://alice:alicepw@" + s, "redis://:alicepw@" + s} {
		r := dl(t, []string{envPassword + "=alicepw"}, "status", "--servers="+servers, "x")
		if r.code != exitUsage || strings.Contains(r.stderr, "alicepw") || strings.Contains(r.stderr, "alice@") {
			t.Errorf("--servers %s: status %d, want %d, without the credentials; stderr: %s", servers, r.code, exitUsage, r.stderr)
		}
		r = dl(t, []string{envPassword + "=alicepw", envServers + "=" + servers}, "status", "x")
		if r.code != exitUsage {
			t.Errorf("%s=%s: status %d, want %d", envServers, servers, r.code, exitUsage)
		}
	}
	r := dl(t, []string{envPassword + "=alicepw"}, "status", "--user", "alice", "--servers="+s, "x")
	if r.code != 0 {
		t.Errorf("--user alice: status %d; output: %s%s", r.code, r.stdout, r.stderr)
	}
}

// newServerWithUser starts a redis-server with the ACL user alice
// (password alicepw) and returns its address.
func newServerWithUser(t *testing.T) string {
	t.Helper()
	s := distlocktest.NewServer(t)
	if _, err := s.Do("ACL", "SETUSER", "alice", "on", ">alicepw", "~*", "&*", "+@all"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Do("CONFIG", "SET", "requirepass", "defaultpw"); err != nil {
		t.Fatal(err)
	}
	return s.Addr()
}

// TestObserveMastersUnreadable: observe exits 69 when the masters cannot
// be read (all down, or credentials refused) instead of waiting silently.
func TestObserveMastersUnreadable(t *testing.T) {
	t.Parallel()
	ss, srv := servers(t, 3)
	for _, s := range ss {
		if err := s.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	p := startBackground(t, dir, "observe", nil, "observe", srv, "--ttl", "1s", "nobody")
	select {
	case <-p.done:
		if p.code != exitUnavailable {
			t.Errorf("status %d, want %d; stderr: %s", p.code, exitUnavailable, output(dir, "observe.stderr"))
		}
	case <-time.After(10 * time.Second):
		t.Errorf("observe with every master down: still running after 10s, stdout %q", output(dir, "observe.stdout"))
	}
}

// TestBenchMastersDown: bench exits 69, saying why, when every master is
// unreachable (its Lock calls retry until --duration ends).
func TestBenchMastersDown(t *testing.T) {
	t.Parallel()
	ss, srv := servers(t, 3)
	for _, s := range ss {
		if err := s.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	for _, mode := range [][]string{nil, {"--contended"}} {
		args := append([]string{"bench", srv, "--duration", "1s", "--json", "--log-level", "off"}, mode...)
		r := dl(t, nil, args...)
		if r.code != exitUnavailable {
			t.Errorf("bench %v with every master down: status %d, want %d; stdout: %s", mode, r.code, exitUnavailable, r.stdout)
		}
	}
}

// TestPasswordFileTooLarge: a password file of more than 64 KiB without a
// line end is the wrong file: a usage error naming it, not its first 64 KiB
// sent as the password.
func TestPasswordFileTooLarge(t *testing.T) {
	t.Parallel()
	s := distlocktest.NewServer(t, "--requirepass", "right")
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(strings.Repeat("x", 100<<10)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := dl(t, nil, "status", "--servers="+s.Addr(), "--password-file", pw, "x")
	if r.code != exitUsage || !strings.Contains(r.stderr, pw) {
		t.Errorf("a 100 KiB password file: status %d (want %d, naming the file); stderr: %s", r.code, exitUsage, r.stderr)
	}
}

// TestSignalsAndRestarts: SIGTERM and
// SIGINT while waiting for a busy lock end distlock with 143 and 130 and
// run nothing; a command killed by SIGKILL gives 137; a lease lost because
// two of three masters restarted empty gets the command SIGTERM and 79.
func TestSignalsAndRestarts(t *testing.T) {
	t.Parallel()
	ss, srv := servers(t, 3)
	dir := t.TempDir()
	holder := startBackground(t, dir, "holder", nil, "run", srv, "busy-sig", "--", "sleep", "30")
	if !waitFor(15*time.Second, func() bool { return statusOf(t, srv, "busy-sig").Held }) {
		t.Fatal("the holder did not take the lock")
	}
	marker := filepath.Join(dir, "ran")
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		tag := "waiter-" + sig.String()
		p := startBackground(t, dir, tag, nil, "run", srv, "--log-level", "debug", "busy-sig", "--", "touch", marker)
		// Into the wait: an acquire round was made (logged at Debug), so
		// the signal handlers are in place (a loaded machine may take more
		// than a second to get there).
		if !waitFor(15*time.Second, func() bool { return strings.Contains(output(dir, tag+".stderr"), "acquire round") }) {
			t.Fatalf("%s made no acquire round; stderr: %s", tag, output(dir, tag+".stderr"))
		}
		_ = p.cmd.Process.Signal(sig)
		_ = p.cmd.Process.Signal(sig) // a second one changes nothing
		if code := waitExit(t, "waiter", p, 10*time.Second); code != 128+int(sig) {
			t.Errorf("%v while waiting: status %d, want %d", sig, code, 128+int(sig))
		}
	}
	if exists(marker) {
		t.Error("a waiter that got a signal ran its command")
	}
	_ = holder.cmd.Process.Signal(syscall.SIGKILL)

	if r := dl(t, nil, "run", srv, "killed", "--", "sh", "-c", "kill -KILL $$"); r.code != 137 {
		t.Errorf("command killed by SIGKILL: status %d, want 137", r.code)
	}

	term := filepath.Join(dir, "term")
	started := filepath.Join(dir, "started")
	script := fmt.Sprintf(`trap 'touch %s; exit 0' TERM; touch %s; while :; do sleep 0.05; done`, term, started)
	p := startBackground(t, dir, "restart", nil, "run", srv, "--ttl", "3s", "restart", "--", "sh", "-c", script)
	if !waitFor(15*time.Second, func() bool { return exists(started) }) {
		t.Fatalf("the command did not start; stderr: %s", output(dir, "restart.stderr"))
	}
	for _, s := range ss[:2] {
		if err := s.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	if code := waitExit(t, "distlock run", p, 15*time.Second); code != exitLost || !exists(term) {
		t.Errorf("masters restarted empty: status %d (want %d), SIGTERM %v; stderr: %s", code, exitLost, exists(term), output(dir, "restart.stderr"))
	}
}

// TestShortWaitTriesOnce: a --wait shorter than one round (or a slow first
// round: a distant master, a TLS handshake) still makes one complete
// attempt: a free lock is taken (0) and a busy one gives 75, as with
// --no-wait, not 69 ("masters unavailable").
func TestShortWaitTriesOnce(t *testing.T) {
	t.Parallel()
	_, srv := servers(t, 3)
	if r := dl(t, nil, "run", srv, "--wait", "1ns", "short-free", "--", "true"); r.code != 0 {
		t.Errorf("--wait 1ns on a free lock: status %d, want 0 (one attempt, like --no-wait); stderr: %s", r.code, r.stderr)
	}
	dir := t.TempDir()
	holder := startBackground(t, dir, "holder", nil, "run", srv, "short-busy", "--", "sleep", "30")
	defer func() { _ = holder.cmd.Process.Signal(syscall.SIGTERM) }()
	if !waitFor(15*time.Second, func() bool { return statusOf(t, srv, "short-busy").Held }) {
		t.Fatal("the holder did not take the lock")
	}
	if r := dl(t, nil, "run", srv, "--wait", "1ns", "short-busy", "--", "true"); r.code != exitConflict {
		t.Errorf("--wait 1ns on a busy lock: status %d, want %d; stderr: %s", r.code, exitConflict, r.stderr)
	}
}

// alive reports whether process pid runs: it exists and is not a zombie
// (an orphan's zombie stays until whoever adopted it reaps it, which on
// some machines is slow or never).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: trust kill
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}
