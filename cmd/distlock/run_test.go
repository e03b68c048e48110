package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distlock/distlock/distlocktest"
)

// TestRunNoOverlap: two loops of distlock run on one name never run their
// commands at the same time: in the log, starts and ends alternate.
func TestRunNoOverlap(t *testing.T) {
	t.Parallel()
	_, srv := servers(t, 3)
	log := filepath.Join(t.TempDir(), "log")
	const iterations = 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*iterations)
	for _, id := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			script := fmt.Sprintf(`echo start %[1]s $(date +%%s%%N) >> %[2]s; sleep 0.02; echo end %[1]s $(date +%%s%%N) >> %[2]s`, id, log)
			for i := range iterations {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				out, err := dlCommand(ctx, nil, "run", srv, "overlap", "--", "sh", "-c", script).CombinedOutput()
				cancel()
				if err != nil {
					errs <- fmt.Errorf("%s iteration %d: %v: %s", id, i, err, out)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	stamps := readStamps(t, log)
	if len(stamps) != 2*2*iterations {
		t.Fatalf("%d lines in the log, want %d", len(stamps), 2*2*iterations)
	}
	for i := 0; i < len(stamps); i += 2 {
		s, e := stamps[i], stamps[i+1]
		if s.event != "start" || e.event != "end" || s.id != e.id || e.at.Before(s.at) {
			t.Fatalf("lines %d-%d: %v then %v: not the start and end of one run", i+1, i+2, s, e)
		}
		if i > 0 && s.at.Before(stamps[i-1].at) {
			t.Fatalf("line %d: %v starts before the previous run ended (%v)", i+1, s, stamps[i-1])
		}
	}
}

// TestRunExitStatus: distlock exits with the command's status, 128+N when
// it was killed by signal N; the command sees DISTLOCK_NAME and
// DISTLOCK_TOKEN.
func TestRunExitStatus(t *testing.T) {
	t.Parallel()
	_, srv := servers(t, 3)
	if r := dl(t, nil, "run", srv, "status", "--", "sh", "-c", "exit 7"); r.code != 7 {
		t.Errorf("exit 7: status %d; stderr: %s", r.code, r.stderr)
	}
	if r := dl(t, nil, "run", srv, "status", "--", "sh", "-c", "kill -TERM $$"); r.code != 128+15 {
		t.Errorf("killed by SIGTERM: status %d, want 143; stderr: %s", r.code, r.stderr)
	}
	r := dl(t, nil, "run", srv, "status", "--", "sh", "-c", `echo "$DISTLOCK_NAME $DISTLOCK_TOKEN"`)
	var name string
	var token uint64
	if _, err := fmt.Sscan(r.stdout, &name, &token); err != nil || r.code != 0 || name != "status" || token == 0 {
		t.Errorf("environment: status %d, output %q (%v)", r.code, r.stdout, err)
	}
	r2 := dl(t, nil, "run", srv, "status", "--", "sh", "-c", `echo "$DISTLOCK_NAME $DISTLOCK_TOKEN"`)
	var token2 uint64
	if _, err := fmt.Sscan(r2.stdout, &name, &token2); err != nil || token2 <= token {
		t.Errorf("second token %q not above the first %d (%v)", r2.stdout, token, err)
	}
}

// TestRunNoWaitBusy: --no-wait on a held lock runs nothing and exits with
// the conflict status, 75 or -E's.
func TestRunNoWaitBusy(t *testing.T) {
	t.Parallel()
	ss, srv := servers(t, 3)
	c := libClient(t, ss)
	m, err := c.NewMutex("busy")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Unlock(context.Background())

	marker := filepath.Join(t.TempDir(), "ran")
	if r := dl(t, nil, "run", srv, "--no-wait", "busy", "--", "touch", marker); r.code != exitConflict || r.stderr != "" {
		t.Errorf("--no-wait: status %d (want %d), stderr %q", r.code, exitConflict, r.stderr)
	}
	if r := dl(t, nil, "run", srv, "--no-wait", "-E", "3", "busy", "--", "touch", marker); r.code != 3 {
		t.Errorf("--no-wait -E 3: status %d, want 3; stderr %q", r.code, r.stderr)
	}
	if r := dl(t, nil, "run", srv, "--wait", "300ms", "--conflict-exit-code", "4", "busy", "--", "touch", marker); r.code != 4 {
		t.Errorf("--wait 300ms: status %d, want 4; stderr %q", r.code, r.stderr)
	}
	if exists(marker) {
		t.Error("the command ran although the lock was held")
	}
}

// TestRunLostLease: when the lease is lost (2 of 3 masters paused), the
// command gets SIGTERM before the lock could have expired, and distlock
// exits with the lost status.
func TestRunLostLease(t *testing.T) {
	t.Parallel()
	ss, srv := servers(t, 3)
	dir := t.TempDir()
	started, term := filepath.Join(dir, "started"), filepath.Join(dir, "term")
	// wait (unlike a foreground sleep) lets the trap run as soon as TERM arrives.
	script := fmt.Sprintf(`trap 'date +%%s%%N > %[2]s; exit 0' TERM; date +%%s%%N > %[1]s; while :; do sleep 1 & wait $!; done`, started, term)
	// The lease is declared lost --stop-margin (ttl/5: 400ms) before it
	// could expire.
	const ttl = 2 * time.Second
	done := startBackground(t, dir, "run", nil, "run", srv, "--ttl", ttl.String(), "lost", "--", "sh", "-c", script)
	if !waitFor(15*time.Second, func() bool { return exists(started) }) {
		t.Fatalf("the command did not start; stderr: %s", output(dir, "run.stderr"))
	}
	t.Cleanup(func() {
		_ = ss[0].Resume()
		_ = ss[1].Resume()
	})
	if err := ss[0].Pause(); err != nil {
		t.Fatal(err)
	}
	if err := ss[1].Pause(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	code := waitExit(t, "distlock run", done, 20*time.Second)
	if code != exitLost {
		t.Errorf("status %d, want %d; stderr: %s", code, exitLost, output(dir, "run.stderr"))
	}
	if !exists(term) {
		t.Fatalf("the command got no SIGTERM; stderr: %s", output(dir, "run.stderr"))
	}
	st, tm := readStamp(t, started), readStamp(t, term)
	// Any renewal that succeeded needed an answer from a paused master, so
	// it began before the pause: the lease was valid at most until
	// paused+ttl, and without a renewal until started+ttl.
	t.Logf("SIGTERM %v after the start, %v after the pause", tm.Sub(st), tm.Sub(paused))
	if !tm.Before(paused.Add(ttl - ttl/5/2)) {
		t.Errorf("SIGTERM came %v after the pause: not half the stop margin (ttl/5) before the TTL %v", tm.Sub(paused), ttl)
	}
	if !strings.Contains(output(dir, "run.stderr"), "lost") {
		t.Errorf("stderr does not report the loss: %s", output(dir, "run.stderr"))
	}
	// The library's logger (--log-level warn, the default) told the operator
	// why, with the masters' addresses.
	for _, want := range []string{`level=WARN msg="distlock: master suspected down"`, `level=WARN msg="distlock: lease lost"`} {
		if !strings.Contains(output(dir, "run.stderr"), want) {
			t.Errorf("stderr has no %s: %s", want, output(dir, "run.stderr"))
		}
	}
}

// TestRunMinHold: after a run with --min-hold 3s, the lock stays taken: a
// --no-wait run right after runs nothing.
func TestRunMinHold(t *testing.T) {
	t.Parallel()
	_, srv := servers(t, 3)
	marker := filepath.Join(t.TempDir(), "ran")
	// Far longer than two runs take even on a loaded machine; the test
	// fails rather than skips if they ever take that long. The TTL is at
	// least the minimum hold (see WithMinHold), and the test does not wait
	// for it: nothing runs after the second run.
	const minHold = 30 * time.Second
	start := time.Now()
	if r := dl(t, nil, "run", srv, "--ttl", minHold.String(), "--min-hold", minHold.String(), "minhold", "--", "true"); r.code != 0 {
		t.Fatalf("first run: status %d; stderr: %s", r.code, r.stderr)
	}
	r := dl(t, nil, "run", srv, "--no-wait", "minhold", "--", "touch", marker)
	if took := time.Since(start); took >= minHold {
		t.Fatalf("the two runs took %v, beyond the minimum hold", took)
	}
	if r.code != exitConflict {
		t.Errorf("second run: status %d, want %d; stderr: %s", r.code, exitConflict, r.stderr)
	}
	if exists(marker) {
		t.Error("the second run ran its command within the minimum hold")
	}
}

// TestRunForwardsSignals: SIGTERM to distlock reaches the command, and
// distlock exits with the command's status.
func TestRunForwardsSignals(t *testing.T) {
	t.Parallel()
	_, srv := servers(t, 3)
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	script := fmt.Sprintf(`trap 'exit 42' TERM; touch %s; while :; do sleep 0.05; done`, started)
	p := startBackground(t, dir, "run", nil, "run", srv, "forward", "--", "sh", "-c", script)
	if !waitFor(15*time.Second, func() bool { return exists(started) }) {
		t.Fatalf("the command did not start; stderr: %s", output(dir, "run.stderr"))
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, "distlock run", p, 15*time.Second); code != 42 {
		t.Errorf("status %d, want 42; stderr: %s", code, output(dir, "run.stderr"))
	}
	// Released: the lock can be taken at once.
	if r := dl(t, nil, "run", srv, "--no-wait", "forward", "--", "true"); r.code != 0 {
		t.Errorf("after the run: status %d; stderr: %s", r.code, r.stderr)
	}
}

// TestPasswordNotLeaked: a password from --password-file or $REDISCLI_AUTH
// shows in no process list, output or error, right or wrong.
func TestPasswordNotLeaked(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-pw"
	s := distlocktest.NewServer(t, "--requirepass", secret)
	srv := "--servers=" + s.Addr()
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ps := filepath.Join(dir, "ps")
	r := dl(t, nil, "run", srv, "--verbose", "--password-file", pw, "pw", "--", "sh", "-c", "ps -eo args > "+ps+"; sleep 0.2")
	if r.code != 0 {
		t.Fatalf("status %d; stderr: %s", r.code, r.stderr)
	}
	data, err := os.ReadFile(ps)
	if err != nil {
		t.Fatal(err)
	}
	sawSelf := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "redis-server") {
			continue // the test's server has it on its command line
		}
		if strings.Contains(line, "--password-file") {
			sawSelf = true
		}
		if strings.Contains(line, secret) {
			t.Errorf("ps shows the password: %q", line)
		}
	}
	if !sawSelf {
		t.Errorf("distlock is not in the ps output:\n%s", data)
	}
	if strings.Contains(r.stdout+r.stderr, secret) {
		t.Errorf("output shows the password: %s %s", r.stdout, r.stderr)
	}

	const wrong = "wr0ng-pw-x"
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte(wrong), 0o600); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "ran")
	r = dl(t, nil, "run", srv, "--wait", "5s", "--password-file", bad, "pw", "--", "touch", marker)
	if r.code != exitUnavailable || r.stderr == "" || strings.Contains(r.stdout+r.stderr, wrong) || exists(marker) {
		t.Errorf("wrong password: status %d (want %d), ran %v, stderr: %s", r.code, exitUnavailable, exists(marker), r.stderr)
	}
	r = dl(t, []string{envPassword + "=" + wrong}, "status", srv, "pw")
	if r.code != exitUnavailable || strings.Contains(r.stdout+r.stderr, wrong) {
		t.Errorf("status with a wrong password: status %d (want %d), output: %s %s", r.code, exitUnavailable, r.stdout, r.stderr)
	}

	r = dl(t, []string{envPassword + "=" + secret}, "run", srv, "pw", "--", "touch", marker)
	if r.code != 0 || !exists(marker) || strings.Contains(r.stdout+r.stderr, secret) {
		t.Errorf("%s: status %d, ran %v, stderr: %s", envPassword, r.code, exists(marker), r.stderr)
	}
	// A missing password file is reported by name, not content.
	if r := dl(t, nil, "run", srv, "--password-file", filepath.Join(dir, "nope"), "pw", "--", "true"); r.code != exitUsage || !strings.Contains(r.stderr, "password file") {
		t.Errorf("missing password file: status %d, stderr: %s", r.code, r.stderr)
	}
}

// TestRunLostLeaseKillsStubbornCommand: a command that ignores SIGTERM gets
// SIGKILL after the grace, which defaults to the stop margin: it is gone
// about when the lock could expire.
func TestRunLostLeaseKillsStubbornCommand(t *testing.T) {
	t.Parallel()
	ss, srv := servers(t, 3)
	dir := t.TempDir()
	started, term := filepath.Join(dir, "started"), filepath.Join(dir, "term")
	script := fmt.Sprintf(`trap 'date +%%s%%N > %[2]s' TERM; echo $$ > %[1]s; while :; do sleep 1 & wait $!; done`, started, term)
	const ttl = 2 * time.Second
	done := startBackground(t, dir, "run", nil, "run", srv, "--ttl", ttl.String(), "stubborn", "--", "sh", "-c", script)
	if !waitFor(15*time.Second, func() bool { return exists(started) && output(dir, "started") != "" }) {
		t.Fatalf("the command did not start; stderr: %s", output(dir, "run.stderr"))
	}
	pid, err := strconv.Atoi(strings.TrimSpace(output(dir, "started")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ss[0].Resume()
		_ = ss[1].Resume()
		_ = syscall.Kill(pid, syscall.SIGKILL)
	})
	if err := ss[0].Pause(); err != nil {
		t.Fatal(err)
	}
	if err := ss[1].Pause(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	if code := waitExit(t, "distlock run", done, 20*time.Second); code != exitLost {
		t.Errorf("status %d, want %d; stderr: %s", code, exitLost, output(dir, "run.stderr"))
	}
	exited := time.Now()
	if !exists(term) {
		t.Errorf("the command got no SIGTERM first")
	}
	if alive(pid) {
		t.Errorf("the command (pid %d) still runs after distlock exited", pid)
	}
	// Lost ttl/5 before expiry, killed ttl/5 later: about at paused+ttl.
	// A generous bound for a loaded machine; the default of 10s would fail it.
	t.Logf("distlock exited %v after the pause", exited.Sub(paused))
	if exited.Sub(paused) > ttl+3*time.Second {
		t.Errorf("the stubborn command was killed %v after the pause", exited.Sub(paused))
	}
	if !strings.Contains(output(dir, "run.stderr"), "SIGKILL in 400ms") {
		t.Errorf("stderr does not name the grace: %s", output(dir, "run.stderr"))
	}
}

// TestRestartFenceFlag: --restart-fence (and $DISTLOCK_RESTART_FENCE) turn
// the restart fence on: a master that started seconds ago is out of every
// quorum, so --no-wait fails as unavailable and says why; a bad value is a
// usage error.
func TestRestartFenceFlag(t *testing.T) {
	t.Parallel()
	_, srv := servers(t, 1)
	marker := filepath.Join(t.TempDir(), "ran")
	for _, tc := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"--restart-fence", "30s"}},
		{[]string{envRestartFence + "=30s"}, nil},
	} {
		args := append(append([]string{"run", srv}, tc.args...), "--no-wait", "--log-level", "warn", "fenced", "--", "touch", marker)
		r := dl(t, tc.env, args...)
		if r.code != exitUnavailable || !strings.Contains(r.stderr, "restart fence") {
			t.Errorf("%v %v: status %d (want %d), stderr %q", tc.env, tc.args, r.code, exitUnavailable, r.stderr)
		}
	}
	if exists(marker) {
		t.Error("the command ran without a quorum")
	}
	if r := dl(t, nil, "run", srv, "--restart-fence", "soon", "x", "--", "true"); r.code != exitUsage || !strings.Contains(r.stderr, "--restart-fence") {
		t.Errorf("--restart-fence soon: status %d (want %d), stderr %q", r.code, exitUsage, r.stderr)
	}
}

// TestRunOnCluster: a master that is a Redis Cluster of several nodes is
// given to --servers by one of its nodes; names in every node's slots run
// under the lock, with a fencing token.
func TestRunOnCluster(t *testing.T) {
	t.Parallel()
	cl := distlocktest.NewCluster(t, 3)
	for i := range 6 {
		name := fmt.Sprintf("cluster-%d", i)
		r := dl(t, nil, "run", "--servers="+cl.Addrs()[0], name, "--", "sh", "-c", `echo "$DISTLOCK_TOKEN"`)
		var token uint64
		if _, err := fmt.Sscan(r.stdout, &token); err != nil || r.code != 0 || token == 0 {
			t.Errorf("%s (on node %s): status %d, output %q, stderr %q", name, cl.NodeFor(name).Addr(), r.code, r.stdout, r.stderr)
		}
	}
}
