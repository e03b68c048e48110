package main

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestElectOneAtATime: two distlock elect processes run one command at a
// time; when the leader's whole process group dies (a machine death), the
// other takes over, and its command starts only after the kill.
func TestElectOneAtATime(t *testing.T) {
	t.Parallel()
	_, srv := servers(t, 3)
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	script := fmt.Sprintf(`trap 'echo end $DISTLOCK_ID $(date +%%s%%N) >> %[1]s; exit 0' TERM; echo start $DISTLOCK_ID $(date +%%s%%N) >> %[1]s; while :; do sleep 0.05; done`, log)
	procs := map[string]*bgProc{}
	for _, id := range []string{"A", "B"} {
		procs[id] = startBackground(t, dir, id, nil, "elect", srv, "--ttl", "1s", "--id", id, "--verbose", "leader", "--", "sh", "-c", script)
	}
	var first string
	if !waitFor(15*time.Second, func() bool {
		if s := readStamps(t, log); len(s) > 0 {
			first = s[0].id
			return true
		}
		return false
	}) {
		t.Fatalf("no command started; stderr A: %s\nstderr B: %s", output(dir, "A.stderr"), output(dir, "B.stderr"))
	}
	second := map[string]string{"A": "B", "B": "A"}[first]
	// Let the follower campaign for a while: it must not start its command.
	time.Sleep(500 * time.Millisecond)
	if s := readStamps(t, log); len(s) != 1 {
		t.Fatalf("while %s leads: %v", first, s)
	}
	if err := syscall.Kill(-procs[first].cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitExit(t, first, procs[first], 10*time.Second)

	var stamps []stampLine
	if !waitFor(15*time.Second, func() bool {
		stamps = readStamps(t, log)
		return len(stamps) >= 2
	}) {
		t.Fatalf("%s did not take over; stderr: %s", second, output(dir, second+".stderr"))
	}
	if s := stamps[1]; s.event != "start" || s.id != second || !s.at.After(killed) {
		t.Fatalf("after the kill of %s at %v: %v", first, killed, stamps)
	}
	t.Logf("%s took over %v after the kill", second, stamps[1].at.Sub(killed))

	// SIGTERM to the new leader's distlock: forwarded, the command ends,
	// distlock resigns and exits with the command's status.
	if err := syscall.Kill(procs[second].cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, second, procs[second], 15*time.Second); code != 0 {
		t.Errorf("%s: status %d after SIGTERM; stderr: %s", second, code, output(dir, second+".stderr"))
	}
	stamps = readStamps(t, log)
	if len(stamps) != 3 || stamps[2].event != "end" || stamps[2].id != second {
		t.Errorf("log: %v", stamps)
	}
}

// TestElectRestartsAfterLoss: a leader that loses its lease (its masters
// paused) stops its command, and starts it again when it leads again.
func TestElectRestartsAfterLoss(t *testing.T) {
	t.Parallel()
	ss, srv := servers(t, 3)
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	script := fmt.Sprintf(`trap 'echo end $DISTLOCK_ID $(date +%%s%%N) >> %[1]s; exit 0' TERM; echo start $DISTLOCK_ID $(date +%%s%%N) >> %[1]s; while :; do sleep 0.05; done`, log)
	p := startBackground(t, dir, "A", nil, "elect", srv, "--ttl", "1s", "--id", "A", "leader", "--", "sh", "-c", script)
	if !waitFor(15*time.Second, func() bool { return len(readStamps(t, log)) == 1 }) {
		t.Fatalf("no command started; stderr: %s", output(dir, "A.stderr"))
	}
	t.Cleanup(func() {
		_ = ss[0].Resume()
		_ = ss[1].Resume()
	})
	_ = ss[0].Pause()
	_ = ss[1].Pause()
	if !waitFor(15*time.Second, func() bool { return len(readStamps(t, log)) == 2 }) {
		t.Fatalf("the command was not stopped; stderr: %s", output(dir, "A.stderr"))
	}
	_ = ss[0].Resume()
	_ = ss[1].Resume()
	if !waitFor(15*time.Second, func() bool { return len(readStamps(t, log)) == 3 }) {
		t.Fatalf("the command was not started again; stderr: %s", output(dir, "A.stderr"))
	}
	if s := readStamps(t, log); s[1].event != "end" || s[2].event != "start" {
		t.Errorf("log: %v", s)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, "elect", p, 15*time.Second); code != 0 {
		t.Errorf("status %d; stderr: %s", code, output(dir, "A.stderr"))
	}
}

// TestElectCommandExits: a command that exits on its own while leading
// ends distlock elect with its status, and the leadership is given up.
func TestElectCommandExits(t *testing.T) {
	t.Parallel()
	_, srv := servers(t, 3)
	if r := dl(t, nil, "elect", srv, "--ttl", "5s", "exits", "--", "sh", "-c", "exit 5"); r.code != 5 {
		t.Errorf("status %d, want 5; stderr: %s", r.code, r.stderr)
	}
	if st := statusOf(t, srv, "exits"); st.Held {
		t.Errorf("still held after the command exited: %+v", st)
	}
	if r := dl(t, nil, "elect", srv, "exits", "--", "/nonexistent/cmd"); r.code != exitNotFound {
		t.Errorf("missing command: status %d, want %d", r.code, exitNotFound)
	}
}
