//go:build linux

package history

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/distlock/distlock/distlocktest"
)

// fMigrate moves the lock's slot to another node of the Redis Cluster, a
// key at a time, as redis-cli reshards.
const fMigrate = "migrate-slot"

// migrateParams: the CI profile (ciParams) on one master that is a Redis
// Cluster of 3 nodes, and no master or link faults: the slot moves.
func migrateParams() params {
	p := ciParams()
	p.redisCluster = true
	p.replicas = nil
	p.stall = 0
	return p
}

// TestHistoryClusterMigration: K clients lock one name on a Redis Cluster
// of 3 nodes while the name's slot moves from node to node, its keys (the
// lock key and the fencing counter) one at a time, between each move and
// the next a random 50 to 300ms. The history is checked as TestHistory's
// (no overlap, tokens in order, writes in token order, no key left): the
// clients follow every MOVED and ASK and nothing is granted twice.
func TestHistoryClusterMigration(t *testing.T) {
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()) % 1_000_000_007
	}
	d := *flagDuration
	if d == 0 {
		d = 10 * time.Second
	}
	r := runHistory(t, migrateParams(), func(c *cluster) { c.migrations(seed, d) })
	t.Logf("seed %d, %v of slot moves, %d clients: %s", seed, d, *flagClients, r.totals())
	if r.failed() {
		t.Errorf("seed %d: %d violations (replay: go test ./history -run 'TestHistoryClusterMigration$' -seed %d -duration %v):\n%s",
			seed, len(r.violations), seed, d, strings.Join(r.violations, "\n"))
	}
	if r.sections < 10 {
		t.Errorf("only %d critical sections ran: the run checked almost nothing", r.sections)
	}
	if !strings.Contains(r.faultsByKind, fMigrate) {
		t.Errorf("no slot moved: %s", r.faultsByKind)
	}
}

// migrations moves the lock's slot for d, seeded.
func (c *cluster) migrations(seed uint64, d time.Duration) {
	r := rand.New(rand.NewPCG(seed, 0x5107))
	slot := c.rc.SlotOf(c.name)
	nodes := c.rc.Nodes()
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(time.Duration(50+r.IntN(250)) * time.Millisecond)
		f := fault{Kind: fMigrate, Start: time.Now().UnixNano()}
		from := c.rc.NodeFor(c.name)
		to := nodes[(slices.Index(nodes, from)+1+r.IntN(len(nodes)-1))%len(nodes)]
		f.Detail = fmt.Sprintf("slot %d from %s to %s", slot, from.Addr(), to.Addr())
		if err := c.migrate(r, slot, to); err != nil {
			f.Err = err.Error()
		}
		f.End = time.Now().UnixNano()
		c.record(f)
		if f.Err != "" {
			c.t.Errorf("%s: %s", f.Detail, f.Err)
			return
		}
	}
}

// migrate moves slot to node to, its keys one at a time, a few ms apart.
func (c *cluster) migrate(r *rand.Rand, slot int, to *distlocktest.Server) error {
	m, err := c.rc.BeginMigration(slot, to)
	if err != nil {
		return err
	}
	keys, err := redis.Strings(m.Source().Do("CLUSTER", "GETKEYSINSLOT", slot, 100))
	if err != nil {
		return err
	}
	for _, k := range keys {
		time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
		if err := m.MoveKey(k); err != nil {
			return err
		}
	}
	return m.Finish()
}
