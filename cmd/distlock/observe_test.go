package main

import (
	"bufio"
	"context"
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/distlock/distlock"
)

// TestObserve: observe --json prints the vacancy, then the leader when one
// is elected; it exits 0 on SIGINT.
func TestObserve(t *testing.T) {
	t.Parallel()
	ss, srv := servers(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := dlCommand(ctx, nil, "observe", "--json", "--ttl", "1s", srv, "watched")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan observeEvent, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev observeEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				lines <- ev
			}
		}
	}()
	next := func(what string) observeEvent {
		t.Helper()
		select {
		case ev, ok := <-lines:
			if !ok {
				t.Fatalf("%s: observe ended", what)
			}
			return ev
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: no line from observe within 15s", what)
		}
		return observeEvent{}
	}
	if ev := next("initial state"); !ev.Vacant {
		t.Fatalf("first report: %+v, want no leader", ev)
	}

	c := libClient(t, ss)
	e, err := distlock.NewElection[string](c, "watched", nil, distlock.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	leading := make(chan error, 1)
	go func() {
		leading <- e.Run(ctx, "node-7", func(ctx context.Context) error { <-ctx.Done(); return nil })
	}()
	ev := next("elected")
	if ev.Vacant || string(ev.Leader) != `"node-7"` || ev.Term == 0 {
		t.Fatalf("after the election: %+v (%s)", ev, ev.Leader)
	}
	// The announcement can come before Run has taken office in this
	// process (Resign then answers ErrNotHeld): wait until it leads.
	if !waitFor(15*time.Second, func() bool { _, ok := e.Leading(); return ok }) {
		t.Fatal("the election's Run does not lead")
	}
	if err := e.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := next("resigned"); !ev.Vacant {
		t.Errorf("after resigning: %+v", ev)
	}
	<-leading
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("observe after SIGINT: %v", err)
	}
}
