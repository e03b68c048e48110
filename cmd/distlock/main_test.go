package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// binary is the distlock command built by TestMain.
var binary string

// TestMain builds the command once; every test runs the built binary.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "distlock-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "distlock")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is what one run of the binary gave.
type result struct {
	stdout, stderr string
	code           int
}

// dlCommand returns the binary's command with args and extra environment
// variables, with DISTLOCK_SERVERS and REDISCLI_AUTH removed from the
// inherited environment.
func dlCommand(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envServers+"=") && !strings.HasPrefix(kv, envPassword+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// The servers the tests start are seconds old: the restart fence would
	// keep them out at first contact. TestRestartFenceFlag turns it on.
	cmd.Env = append(cmd.Env, envRestartFence+"=off")
	cmd.Env = append(cmd.Env, env...)
	cmd.WaitDelay = time.Second
	return cmd
}

// dl runs the binary with args, bounded by 30 seconds, and returns its
// output and exit status.
func dl(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := dlCommand(ctx, env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		t.Fatalf("distlock %s: timed out\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.stdout, r.stderr)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("distlock %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// servers starts n redis-server masters for t and returns --servers.
func servers(t *testing.T, n int) ([]*distlocktest.Server, string) {
	t.Helper()
	ss := distlocktest.NewServers(t, n)
	return ss, "--servers=" + strings.Join(distlocktest.Addrs(ss), ",")
}

// waitFor polls cond every 10ms until it is true or d has passed, and
// reports whether it became true.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// readStamp reads a file holding one nanosecond Unix time (date +%s%N).
func readStamp(t *testing.T, path string) time.Time {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %q: %v", path, data, err)
	}
	return time.Unix(0, ns)
}

// stampLine is one line "EVENT ID NANOS" of a log written by test children.
type stampLine struct {
	event, id string
	at        time.Time
}

// readStamps parses a log of stamp lines.
func readStamps(t *testing.T, path string) []stampLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatal(err)
	}
	defer f.Close()
	var out []stampLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			t.Fatalf("%s: bad line %q", path, sc.Text())
		}
		ns, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			t.Fatalf("%s: bad line %q", path, sc.Text())
		}
		out = append(out, stampLine{fields[0], fields[1], time.Unix(0, ns)})
	}
	return out
}

// TestHelp: every subcommand's --help exits 0 and shows an example; a
// usage mistake exits 64.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, c := range commands {
		r := dl(t, nil, c.name, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "Example") {
			t.Errorf("distlock %s --help: status %d, stdout:\n%s\nstderr:\n%s", c.name, r.code, r.stdout, r.stderr)
		}
	}
	if r := dl(t, nil, "--help"); r.code != 0 || !strings.Contains(r.stdout, "Example") {
		t.Errorf("distlock --help: status %d, stdout:\n%s", r.code, r.stdout)
	}
	for _, args := range [][]string{
		{},
		{"nosuch"},
		{"run", "name-only"},
		{"run", "name", "cmd"},
		{"run", "--bogus", "n", "--", "true"},
		{"run", "--wait", "1s", "--no-wait", "n", "--", "true"},
		{"status"},
		{"observe", "a", "b"},
		{"bench", "--concurrency", "0"},
		{"elect", "n"},
		{"run", "--log-level", "loud", "n", "--", "true"},
		{"run", "--ttl", "10s", "--stop-margin", "5s", "n", "--", "true"},
		{"elect", "--ttl", "10s", "--stop-margin", "7s", "n", "--", "true"},
	} {
		r := dl(t, nil, args...)
		if r.code != exitUsage || !strings.HasPrefix(r.stderr, "distlock: ") {
			t.Errorf("distlock %q: status %d (want %d), stderr:\n%s", args, r.code, exitUsage, r.stderr)
		}
	}
}

// TestVersion: version prints the version and the Go version.
func TestVersion(t *testing.T) {
	t.Parallel()
	r := dl(t, nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "distlock ") || !strings.Contains(r.stdout, "go1.") {
		t.Errorf("version: status %d, output %q", r.code, r.stdout)
	}
}

// TestCommandNotFound: 127 for a missing command, 126 for one that is not
// executable; neither takes the lock.
func TestCommandNotFound(t *testing.T) {
	t.Parallel()
	_, srv := servers(t, 1)
	if r := dl(t, nil, "run", srv, "nf", "--", "/nonexistent/cmd"); r.code != exitNotFound {
		t.Errorf("missing command: status %d, want %d; stderr: %s", r.code, exitNotFound, r.stderr)
	}
	notExec := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := dl(t, nil, "run", srv, "nf", "--", notExec); r.code != exitNotExec {
		t.Errorf("not executable: status %d, want %d; stderr: %s", r.code, exitNotExec, r.stderr)
	}
}

// bgProc is a distlock process started by startBackground.
type bgProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	code int           // its exit status, once done is closed
}

// startBackground starts the binary with args in its own process group,
// output to files in dir (named after tag), and waits for it in the
// background. Cleanup kills the group if it still runs.
func startBackground(t *testing.T, dir, tag string, env []string, args ...string) *bgProc {
	t.Helper()
	cmd := dlCommand(context.Background(), env, args...)
	var err error
	if cmd.Stdout, err = os.Create(filepath.Join(dir, tag+".stdout")); err != nil {
		t.Fatal(err)
	}
	if cmd.Stderr, err = os.Create(filepath.Join(dir, tag+".stderr")); err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &bgProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		// Kill whatever is left of the group (the test may have ended early).
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: still running 10s after SIGKILL", tag)
		}
	})
	return p
}

// waitExit waits up to d for p to exit and returns its exit status.
func waitExit(t *testing.T, tag string, p *bgProc, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v", tag, d)
		return -1
	}
}

// output returns the content of a file written by startBackground.
func output(dir, name string) string {
	data, _ := os.ReadFile(filepath.Join(dir, name))
	return string(data)
}

// libClient returns a library Client over the servers, for a test that
// holds or inspects locks beside the binary; it is closed when t ends.
func libClient(t *testing.T, ss []*distlocktest.Server) *distlock.Client {
	t.Helper()
	c, err := distlock.NewClient(distlocktest.Addrs(ss), distlock.WithoutRestartFence()) // the servers are seconds old
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
