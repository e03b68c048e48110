package distlock

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/distlock/distlock/distlocktest"
)

// TestKeySlot: keySlot agrees with the Redis Cluster specification's values
// and with CLUSTER KEYSLOT for keys with and without hash tags.
func TestKeySlot(t *testing.T) {
	for key, want := range map[string]int{"123456789": 12739, "foo": 12182, "{user1000}.following": 3443, "foo{}{bar}": 8363, "foo{{bar}}zap": 4015} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	node := distlocktest.NewCluster(t, 1).Nodes()[0]
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		b := make([]byte, r.IntN(24))
		for j := range b {
			b[j] = "ab{}\x00\xff:é"[r.IntN(9)]
		}
		key := string(b)
		if i%5 == 0 {
			key = fmt.Sprintf("{%s}:%d", key, i)
		}
		v, err := node.Do("CLUSTER", "KEYSLOT", key)
		if err != nil {
			t.Fatal(err)
		}
		if got := keySlot(key); int64(got) != v.(int64) {
			t.Errorf("keySlot(%q) = %d, CLUSTER KEYSLOT says %d", key, got, v)
		}
	}
}
