package distlocktest_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distlock/distlock/distlocktest"
	"github.com/gomodule/redigo/redis"
)

// keyOn returns a key, prefix:n for the smallest n, that NodeFor puts on
// node.
func keyOn(t *testing.T, c *distlocktest.Cluster, node *distlocktest.Server, prefix string) string {
	t.Helper()
	for n := range 1000 {
		key := fmt.Sprintf("%s:%d", prefix, n)
		if c.NodeFor(key) == node {
			return key
		}
	}
	t.Fatalf("no key %s:n on %s", prefix, node.Addr())
	return ""
}

// waitFor polls cond every 20ms until it returns nil, for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %v", what, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clusterInfo returns field of s's CLUSTER INFO.
func clusterInfo(s *distlocktest.Server, field string) (string, error) {
	info, err := redis.String(s.Do("CLUSTER", "INFO"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("no %s in CLUSTER INFO", field)
}

// wantRedirect checks that err is the redis error "<kind> <slot> <addr>".
func wantRedirect(t *testing.T, err error, kind string, slot int, addr string) {
	t.Helper()
	var re redis.Error
	if want := fmt.Sprintf("%s %d %s", kind, slot, addr); !errors.As(err, &re) || string(re) != want {
		t.Fatalf("got error %v, want %q", err, want)
	}
}

func TestClusterUp(t *testing.T) {
	t.Parallel()
	start := time.Now()
	c := distlocktest.NewCluster(t, 3)
	t.Logf("3-node cluster ready in %v", time.Since(start))
	nodes := c.Nodes()
	if len(nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(nodes))
	}
	addrs := c.Addrs()
	for i, s := range nodes {
		if addrs[i] != s.Addr() {
			t.Errorf("Addrs()[%d] = %s, node's is %s", i, addrs[i], s.Addr())
		}
		if _, err := os.Stat(filepath.Join(s.Dir(), "nodes.conf")); err != nil {
			t.Errorf("node %d's own nodes.conf: %v", i, err)
		}
	}

	// Every node: state ok, every slot covered exactly once.
	for i, s := range nodes {
		for field, want := range map[string]string{"cluster_state": "ok", "cluster_slots_assigned": "16384", "cluster_slots_ok": "16384", "cluster_known_nodes": "3", "cluster_size": "3"} {
			if got, err := clusterInfo(s, field); err != nil || got != want {
				t.Errorf("node %d: %s = %q (%v), want %q", i, field, got, err, want)
			}
		}
		ranges, err := redis.Values(s.Do("CLUSTER", "SLOTS"))
		if err != nil {
			t.Fatal(err)
		}
		covered := make([]int, distlocktest.ClusterSlots)
		for _, r := range ranges {
			rv, _ := redis.Values(r, nil)
			lo, _ := redis.Int(rv[0], nil)
			hi, _ := redis.Int(rv[1], nil)
			for slot := lo; slot <= hi; slot++ {
				covered[slot]++
			}
		}
		for slot, n := range covered {
			if n != 1 {
				t.Fatalf("node %d: slot %d covered %d times", i, slot, n)
			}
		}
	}

	// Keys on every node: SET and GET through NodeFor; MOVED from the
	// others, naming NodeFor's address.
	for i, owner := range nodes {
		for j := range 3 {
			key := keyOn(t, c, owner, fmt.Sprintf("up%d-%d", i, j))
			if _, err := owner.Do("SET", key, "v-"+key); err != nil {
				t.Fatalf("SET %s on its node %d: %v", key, i, err)
			}
			if v, err := redis.String(owner.Do("GET", key)); err != nil || v != "v-"+key {
				t.Fatalf("GET %s on its node %d = %q, %v", key, i, v, err)
			}
			for _, other := range nodes {
				if other != owner {
					_, err := other.Do("GET", key)
					wantRedirect(t, err, "MOVED", c.SlotOf(key), owner.Addr())
				}
			}
		}
	}
}

func TestClusterSlotOf(t *testing.T) {
	t.Parallel()
	c := distlocktest.NewCluster(t, 1)
	// From the Redis Cluster specification and CLUSTER KEYSLOT.
	for key, want := range map[string]int{"123456789": 12739, "foo": 12182, "{user1000}.following": 3443, "foo{}{bar}": 8363, "foo{{bar}}zap": 4015, "": 0} {
		if got := c.SlotOf(key); got != want {
			t.Errorf("SlotOf(%q) = %d, want %d", key, got, want)
		}
	}

	keys := []string{"", "a", "{", "}", "{}", "}{", "{user1}:a", "{user1}:b", "x{user1}", "a{}b", "{}{x}", "{}", "{{}}", "{{x}}", "{x}}", "x}y{z", "{a}{b}",
		"a{b", "é{ü}", "{ü}é", "日本{語}", "{🔒}:lock", "\x00", "{\x00}", "\xff{\xfe}", strings.Repeat("k", 1<<12), "{" + strings.Repeat("t", 300) + "}x"}
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab{}\x00\xff:é")
	for range 3000 {
		b := make([]byte, r.IntN(16))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		keys = append(keys, string(b))
	}
	conn, err := redis.Dial("tcp", c.Addrs()[0], redis.DialReadTimeout(5*time.Second), redis.DialWriteTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, k := range keys {
		if err := conn.Send("CLUSTER", "KEYSLOT", k); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	tags := 0
	for _, k := range keys {
		want, err := redis.Int(conn.Receive())
		if err != nil {
			t.Fatal(err)
		}
		if got := c.SlotOf(k); got != want {
			t.Errorf("SlotOf(%q) = %d, CLUSTER KEYSLOT says %d", k, got, want)
		}
		if o := strings.IndexByte(k, '{'); o >= 0 && strings.IndexByte(k[o+1:], '}') > 0 {
			tags++
		}
	}
	if tags < 500 {
		t.Errorf("only %d keys with a hash tag", tags)
	}
	if c.NodeFor("any") != c.Nodes()[0] {
		t.Errorf("NodeFor on a 1-node cluster is not its node")
	}
}

func TestClusterMigrateSlot(t *testing.T) {
	t.Parallel()
	c := distlocktest.NewCluster(t, 3)
	nodes := c.Nodes()
	other := func(s *distlocktest.Server) *distlocktest.Server {
		for _, n := range nodes {
			if n != s {
				return n
			}
		}
		return nil
	}

	// A whole slot, with keys.
	slot := c.SlotOf("{mig}")
	src := c.NodeFor("{mig}")
	dst := other(src)
	var keys []string
	for i := range 250 { // more than one MIGRATE batch
		key := fmt.Sprintf("{mig}:%d", i)
		keys = append(keys, key)
		if _, err := src.Do("SET", key, i); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := c.MigrateSlot(slot, dst); err != nil {
		t.Fatal(err)
	}
	t.Logf("slot with %d keys migrated in %v", len(keys), time.Since(start))
	if got := c.NodeFor(keys[0]); got != dst {
		t.Fatalf("NodeFor after MigrateSlot = %v, want %s", got, dst.Addr())
	}
	for i, key := range keys {
		if v, err := redis.Int(dst.Do("GET", key)); err != nil || v != i {
			t.Fatalf("GET %s on the new owner = %d, %v", key, v, err)
		}
	}
	if n, err := redis.Int(src.Do("CLUSTER", "COUNTKEYSINSLOT", slot)); err != nil || n != 0 {
		t.Fatalf("old owner still has %d keys (%v)", n, err)
	}
	for _, n := range nodes {
		if n != dst {
			_, err := n.Do("GET", keys[0])
			wantRedirect(t, err, "MOVED", slot, dst.Addr())
		}
	}
	// Errors.
	if err := c.MigrateSlot(slot, dst); err == nil {
		t.Error("MigrateSlot to the owner: no error")
	}
	if err := c.MigrateSlot(-1, src); err == nil {
		t.Error("MigrateSlot(-1): no error")
	}
	if err := c.MigrateSlot(distlocktest.ClusterSlots, src); err == nil {
		t.Error("MigrateSlot(16384): no error")
	}
	if err := c.MigrateSlot(slot, new(distlocktest.Server)); err == nil {
		t.Error("MigrateSlot to a stranger: no error")
	}

	// A slot held mid-migration.
	slot2 := c.SlotOf("{mid}")
	src2 := c.NodeFor("{mid}")
	dst2 := other(src2)
	for _, k := range []string{"a", "b"} {
		if _, err := src2.Do("SET", "{mid}:"+k, k); err != nil {
			t.Fatal(err)
		}
	}
	m, err := c.BeginMigration(slot2, dst2)
	if err != nil {
		t.Fatal(err)
	}
	if m.Slot() != slot2 || m.Source() != src2 || m.Target() != dst2 {
		t.Fatalf("migration of %d from %v to %v", m.Slot(), m.Source(), m.Target())
	}
	// No key moved yet: the source serves what it has, ASKs for the rest.
	if v, err := redis.String(src2.Do("GET", "{mid}:a")); err != nil || v != "a" {
		t.Fatalf("GET {mid}:a on the source before any move = %q, %v", v, err)
	}
	_, err = src2.Do("GET", "{mid}:new")
	wantRedirect(t, err, "ASK", slot2, dst2.Addr())

	if err := m.MoveKey("{mid}:a"); err != nil {
		t.Fatal(err)
	}
	if err := m.MoveKey("{other}"); err == nil {
		t.Error("MoveKey of a key of another slot: no error")
	}
	_, err = src2.Do("GET", "{mid}:a")
	wantRedirect(t, err, "ASK", slot2, dst2.Addr())
	if v, err := redis.String(src2.Do("GET", "{mid}:b")); err != nil || v != "b" {
		t.Fatalf("GET {mid}:b, not moved, on the source = %q, %v", v, err)
	}
	_, err = dst2.Do("GET", "{mid}:a")
	wantRedirect(t, err, "MOVED", slot2, src2.Addr())
	conn, err := redis.Dial("tcp", dst2.Addr(), redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Do("ASKING"); err != nil {
		t.Fatal(err)
	}
	if v, err := redis.String(conn.Do("GET", "{mid}:a")); err != nil || v != "a" {
		t.Fatalf("ASKING + GET {mid}:a on the target = %q, %v", v, err)
	}
	if got := c.NodeFor("{mid}:a"); got != src2 {
		t.Fatalf("NodeFor mid-migration = %v, want the source %s", got, src2.Addr())
	}

	if err := m.MoveKeys(); err != nil {
		t.Fatal(err)
	}
	_, err = src2.Do("GET", "{mid}:b")
	wantRedirect(t, err, "ASK", slot2, dst2.Addr())
	if err := m.Finish(); err != nil {
		t.Fatal(err)
	}
	if got := c.NodeFor("{mid}:b"); got != dst2 {
		t.Fatalf("NodeFor after Finish = %v, want %s", got, dst2.Addr())
	}
	for _, k := range []string{"a", "b"} {
		if v, err := redis.String(dst2.Do("GET", "{mid}:"+k)); err != nil || v != k {
			t.Fatalf("GET {mid}:%s on the new owner = %q, %v", k, v, err)
		}
	}
	_, err = src2.Do("GET", "{mid}:b")
	wantRedirect(t, err, "MOVED", slot2, dst2.Addr())
}

// With the default cluster-require-full-coverage yes, a dead master takes
// the whole cluster down once the others flag it as failed.
func TestClusterKillNodeFullCoverage(t *testing.T) {
	t.Parallel()
	c := distlocktest.NewCluster(t, 3)
	nodes := c.Nodes()
	key0 := keyOn(t, c, nodes[0], "kill")
	if _, err := nodes[0].Do("SET", key0, "v"); err != nil {
		t.Fatal(err)
	}
	if err := c.KillNode(3); err == nil {
		t.Error("KillNode(3) of 3: no error")
	}
	if err := c.KillNode(-1); err == nil {
		t.Error("KillNode(-1): no error")
	}
	start := time.Now()
	if err := c.KillNode(2); err != nil {
		t.Fatal(err)
	}
	if err := c.KillNode(2); err != nil {
		t.Fatalf("KillNode of a dead node: %v", err)
	}
	if _, err := nodes[2].Do("PING"); err == nil {
		t.Fatal("killed node answers PING")
	}
	for _, s := range nodes[:2] {
		waitFor(t, 10*time.Second, "cluster_state:fail on "+s.Addr(), func() error {
			if st, err := clusterInfo(s, "cluster_state"); err != nil || st != "fail" {
				return fmt.Errorf("cluster_state %q, %v", st, err)
			}
			return nil
		})
	}
	t.Logf("cluster down %v after the kill", time.Since(start))
	_, err := nodes[0].Do("GET", key0)
	var re redis.Error
	if !errors.As(err, &re) || !strings.HasPrefix(string(re), "CLUSTERDOWN") {
		t.Fatalf("GET of a live node's key with the cluster down: %v, want CLUSTERDOWN", err)
	}

	// Started again, the node rejoins with its nodes.conf (same ID and
	// slots), empty, and the cluster comes back.
	start = time.Now()
	if err := nodes[2].Start(); err != nil {
		t.Fatal(err)
	}
	for _, s := range nodes {
		waitFor(t, 10*time.Second, "cluster_state:ok on "+s.Addr(), func() error {
			if st, err := clusterInfo(s, "cluster_state"); err != nil || st != "ok" {
				return fmt.Errorf("cluster_state %q, %v", st, err)
			}
			return nil
		})
	}
	t.Logf("cluster up %v after the restart", time.Since(start))
	if v, err := redis.String(nodes[0].Do("GET", key0)); err != nil || v != "v" {
		t.Fatalf("GET %s after the restart = %q, %v", key0, v, err)
	}
	key2 := keyOn(t, c, nodes[2], "back")
	if _, err := nodes[2].Do("SET", key2, "v"); err != nil {
		t.Fatalf("SET on the restarted node: %v", err)
	}
}

func TestClusterPassword(t *testing.T) {
	t.Parallel()
	c := distlocktest.NewCluster(t, 2, "--requirepass", "secret")
	nodes := c.Nodes()
	conn, err := redis.Dial("tcp", nodes[0].Addr(), redis.DialReadTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Do("GET", "x")
	conn.Close()
	if err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Fatalf("GET without AUTH: %v, want NOAUTH", err)
	}
	key := keyOn(t, c, nodes[0], "pw")
	if _, err := nodes[0].Do("SET", key, "v"); err != nil {
		t.Fatal(err)
	}
	if err := c.MigrateSlot(c.SlotOf(key), nodes[1]); err != nil {
		t.Fatal(err)
	}
	if v, err := redis.String(nodes[1].Do("GET", key)); err != nil || v != "v" {
		t.Fatalf("GET %s on the new owner = %q, %v", key, v, err)
	}
}

func TestStartClusterSize(t *testing.T) {
	for _, k := range []int{0, -1, distlocktest.ClusterSlots + 1} {
		if c, err := distlocktest.StartCluster(k); err == nil {
			c.Close()
			t.Errorf("StartCluster(%d): no error", k)
		}
	}
}

// With --cluster-require-full-coverage no, the live nodes keep serving
// their slots; the dead node's slots stay assigned to it.
func TestClusterKillNodePartialCoverage(t *testing.T) {
	t.Parallel()
	c := distlocktest.NewCluster(t, 3, "--cluster-require-full-coverage", "no")
	nodes := c.Nodes()
	keys := make([]string, 3)
	for i, s := range nodes {
		keys[i] = keyOn(t, c, s, "partial")
		if _, err := s.Do("SET", keys[i], i); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := c.KillNode(2); err != nil {
		t.Fatal(err)
	}
	dead := nodes[2].Addr() + "@"
	for _, s := range nodes[:2] {
		waitFor(t, 10*time.Second, s.Addr()+" flags the dead node fail", func() error {
			out, err := redis.String(s.Do("CLUSTER", "NODES"))
			if err != nil {
				return err
			}
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) > 2 && strings.HasPrefix(f[1], dead) {
					for _, flag := range strings.Split(f[2], ",") {
						if flag == "fail" {
							return nil
						}
					}
					return fmt.Errorf("flags %s", f[2])
				}
			}
			return errors.New("dead node not in CLUSTER NODES")
		})
	}
	t.Logf("dead node flagged fail %v after the kill", time.Since(start))
	for i, s := range nodes[:2] {
		if st, err := clusterInfo(s, "cluster_state"); err != nil || st != "ok" {
			t.Errorf("node %d: cluster_state %q, %v; want ok", i, st, err)
		}
		if _, err := s.Do("SET", keys[i], "new"); err != nil {
			t.Fatalf("SET on live node %d: %v", i, err)
		}
		if v, err := redis.String(s.Do("GET", keys[i])); err != nil || v != "new" {
			t.Fatalf("GET on live node %d = %q, %v", i, v, err)
		}
		_, err := s.Do("GET", keys[2])
		wantRedirect(t, err, "MOVED", c.SlotOf(keys[2]), nodes[2].Addr())
	}
	if got := c.NodeFor(keys[2]); got != nodes[2] {
		t.Errorf("NodeFor of the dead node's key = %v, want the dead node", got)
	}
	if _, err := nodes[2].Do("GET", keys[2]); err == nil {
		t.Error("dead node answers")
	}
}
