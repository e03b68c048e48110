package distlock

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gomodule/redigo/redis"
)

// TestRedirectIPv6: Redis writes a redirect's endpoint unbracketed, as
// "%s:%d": "MOVED 3999 ::1:6381" for a node at ::1. It is followed, to the
// node at [::1]:6381.
func TestRedirectIPv6(t *testing.T) {
	c, err := NewClient([]string{"127.0.0.1:1"}, WithoutRestartFence())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := c.masters[0]
	for msg, want := range map[string]string{ // closed ports: nothing is written anywhere
		"MOVED 3999 127.0.0.3:1":      "127.0.0.3:1",
		"MOVED 3999 ::1:1":            "[::1]:1",
		"ASK 3999 ::ffff:127.0.0.2:1": "[::ffff:127.0.0.2]:1",
		"MOVED 3999 :2":               "127.0.0.1:2", // no host: the answering node's
		"MOVED 3999 ?:3":              "127.0.0.1:3",
	} {
		ch := make(replyChan, 1)
		cmd := &command{name: "SET", args: []any{"k", "v"}, reply: ch}
		if !m.router.redirect(m, cmd, redis.Error(msg)) {
			t.Errorf("%q: not followed", msg)
			continue
		}
		m.router.mu.Lock()
		_, ok := m.router.nodes[want]
		m.router.mu.Unlock()
		if !ok {
			t.Errorf("%q: no node at %s", msg, want)
		}
	}
}

// TestRedirectLimits: a command follows at most maxRedirects redirects,
// then fails with an error that says the map is changing (transient); and
// a cluster master makes at most maxNodes transports, whatever addresses
// redirects name.
func TestRedirectLimits(t *testing.T) {
	c, err := NewClient([]string{"127.0.0.1:1"}, WithoutRestartFence())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := c.masters[0]
	ch := make(replyChan, 1)
	cmd := &command{name: "SET", args: []any{"k", "v"}, reply: ch, redirects: maxRedirects}
	if !m.router.redirect(m, cmd, redis.Error("MOVED 3999 127.0.0.3:1")) {
		t.Fatal("the last redirect was not answered")
	}
	r := <-ch
	if r.err == nil || !strings.Contains(r.err.Error(), "the slot map is changing") || errors.Is(r.err, ErrPermanent) {
		t.Errorf("after %d redirects: %v", maxRedirects, r.err)
	}
	followed := 0
	for i := range maxNodes + 5 {
		cmd := &command{name: "SET", args: []any{"k", "v"}, reply: make(replyChan, 1)}
		if m.router.redirect(m, cmd, redis.Error(fmt.Sprintf("ASK 3999 127.0.%d.%d:1", 1+i/250, 1+i%250))) {
			followed++
		}
	}
	if followed != maxNodes-1 { // the seed is one
		t.Errorf("%d redirects to new nodes followed, want %d", followed, maxNodes-1)
	}
}
