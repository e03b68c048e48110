package distlock

import (
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
	for msg, want := range map[string]string{
		"MOVED 3999 127.0.0.1:6381": "127.0.0.1:6381",
		"MOVED 3999 ::1:6381":       "[::1]:6381",
		"ASK 3999 2001:db8::7:6381": "[2001:db8::7]:6381",
		"MOVED 3999 :6381":          "127.0.0.1:6381", // no host: the answering node's
		"MOVED 3999 ?:6381":         "127.0.0.1:6381",
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
