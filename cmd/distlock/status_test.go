package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/distlock/distlock"
)

// statusOf runs status --json for name and parses its one line.
func statusOf(t *testing.T, srv, name string) statusJSON {
	t.Helper()
	r := dl(t, nil, "status", "--json", srv, name)
	if r.code != 0 {
		t.Fatalf("status: %d; stderr: %s", r.code, r.stderr)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("status --json: %v: %q", err, r.stdout)
	}
	return st
}

// TestStatusJSON: status --json reports a held lock on every master, with
// its TTL and fencing counter, and not held after release.
func TestStatusJSON(t *testing.T) {
	t.Parallel()
	ss, srv := servers(t, 3)
	c := libClient(t, ss)
	m, err := c.NewMutex("inspected", distlock.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	token, err := lease.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}

	st := statusOf(t, srv, "inspected")
	if !st.Held || st.Quorum != 2 || st.Name != "inspected" || len(st.Masters) != 3 {
		t.Fatalf("held lock: %+v", st)
	}
	for _, ms := range st.Masters {
		// Every master got the acquire: the test's client waited for them.
		if ms.ErrMsg != "" || ms.TTLMs <= 0 || ms.TTLMs > 10000 || ms.Fence < token {
			t.Errorf("master %+v: want held, 0 < ttl_ms <= 10000, fence >= %d", ms, token)
		}
	}
	held := 0
	for _, ms := range st.Masters {
		if ms.Held {
			held++
		}
	}
	if held < 2 {
		t.Errorf("held on %d masters, want a quorum", held)
	}

	if err := lease.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, srv, "inspected"); st.Held {
		t.Errorf("after release: %+v", st)
	}

	// The text form says the same.
	r := dl(t, nil, "status", srv, "inspected")
	if r.code != 0 || !strings.Contains(r.stdout, "not held") {
		t.Errorf("text status: %d %q", r.code, r.stdout)
	}
}
