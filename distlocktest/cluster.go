package distlocktest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// ClusterSlots is the number of hash slots of a Redis Cluster.
const ClusterSlots = 16384

// clusterNodeTimeout is the --cluster-node-timeout of a Cluster's nodes, in
// milliseconds: how long a node is unreachable before the others flag it
// as failing. Small, so that tests of a dead node are quick.
const clusterNodeTimeout = 1000

// clusterReadyTimeout bounds StartCluster's wait for the cluster to be up,
// and Finish's wait for the nodes to agree on a slot's new owner.
const clusterReadyTimeout = 15 * time.Second

// Cluster is a Redis Cluster of k masters (no replicas), each a Server on
// a loopback port with its own directory, no persistence and its own
// cluster configuration file (nodes.conf in Server.Dir). The 16384 slots
// are split evenly and in order: node 0 serves the first k-th, node 1 the
// next, and so on. Its methods are safe for concurrent use, but a slot
// migration must not run concurrently with another one of the same slot.
type Cluster struct {
	nodes    []*Server
	ids      []string // ids[i] is nodes[i]'s cluster node ID
	args     []string // every node's redis-server arguments
	replicas []*Server
}

// StartCluster starts k redis-servers in cluster mode (--cluster-enabled
// yes, --cluster-config-file nodes.conf in each one's own directory,
// --cluster-node-timeout 1000, --cluster-announce-ip 127.0.0.1), gives node i the i-th k-th of the 16384
// slots (CLUSTER ADDSLOTSRANGE) and config epoch i+1, joins them with
// CLUSTER MEET, and waits, at most 15 seconds, until every node reports
// cluster_state:ok, knows all k nodes and agrees on the slot map, with
// each node's address. extra are more redis-server arguments for every
// node (see StartServer); they come after the cluster ones, so
// "--cluster-node-timeout", "500" overrides the timeout, and
// "--cluster-require-full-coverage", "no" keeps the slots of live nodes
// served while another is down. k must be from 1 to 16384. It returns
// ErrNoRedis (wrapped) without redis-server; on any error it stops the
// nodes already started. Redis needs about two seconds after a node starts
// before it reports cluster_state:ok, so StartCluster takes at least that.
// Stop the cluster with Close.
func StartCluster(k int, extra ...string) (*Cluster, error) {
	if k < 1 || k > ClusterSlots {
		return nil, fmt.Errorf("distlocktest: cluster of %d nodes: need 1 to %d", k, ClusterSlots)
	}
	args := append([]string{
		"--cluster-enabled", "yes",
		// Relative to --dir, which redis-server changes into: each node
		// has its own.
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(clusterNodeTimeout),
		// Without it a node learns its own address only from another
		// node's MEET or PING, never in a cluster of one, and until then
		// CLUSTER SLOTS gives "" as its IP.
		"--cluster-announce-ip", "127.0.0.1",
	}, extra...)
	c := &Cluster{args: args}
	fail := func(err error) (*Cluster, error) {
		c.Close()
		return nil, err
	}
	for i := range k {
		s, err := StartServer(args...)
		if err != nil {
			return fail(err)
		}
		c.nodes = append(c.nodes, s)
		id, err := redis.String(s.Do("CLUSTER", "MYID"))
		if err != nil {
			return fail(fmt.Errorf("distlocktest: CLUSTER MYID on %s: %w", s.Addr(), err))
		}
		c.ids = append(c.ids, id)
		// Distinct config epochs, as redis-cli --cluster create sets them:
		// no epoch collision to resolve after the MEETs.
		if _, err := s.Do("CLUSTER", "SET-CONFIG-EPOCH", i+1); err != nil {
			return fail(fmt.Errorf("distlocktest: CLUSTER SET-CONFIG-EPOCH on %s: %w", s.Addr(), err))
		}
		lo, hi := slotRange(i, k)
		if _, err := s.Do("CLUSTER", "ADDSLOTSRANGE", lo, hi); err != nil {
			return fail(fmt.Errorf("distlocktest: CLUSTER ADDSLOTSRANGE %d %d on %s: %w", lo, hi, s.Addr(), err))
		}
	}
	// Node 0 meets every other node; gossip tells each about the rest.
	for _, s := range c.nodes[1:] {
		host, port, _ := net.SplitHostPort(s.Addr())
		if _, err := c.nodes[0].Do("CLUSTER", "MEET", host, port); err != nil {
			return fail(fmt.Errorf("distlocktest: CLUSTER MEET %s on %s: %w", s.Addr(), c.nodes[0].Addr(), err))
		}
	}
	want := make([]int, ClusterSlots)
	for i := range k {
		lo, hi := slotRange(i, k)
		for slot := lo; slot <= hi; slot++ {
			want[slot] = i
		}
	}
	if err := c.waitAgree(want, true); err != nil {
		return fail(err)
	}
	return c, nil
}

// NewCluster starts a Cluster for t (see StartCluster) and closes it in
// t.Cleanup. Without redis-server it fails t, unless DISTLOCK_SKIP_REDIS is
// set, which skips t (see SkipWithoutRedis).
func NewCluster(t testing.TB, k int, extra ...string) *Cluster {
	t.Helper()
	c, err := StartCluster(k, extra...)
	if errors.Is(err, ErrNoRedis) && SkipWithoutRedis() {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// slotRange returns the first and last slot of node i of k.
func slotRange(i, k int) (lo, hi int) {
	return i * ClusterSlots / k, (i+1)*ClusterSlots/k - 1
}

// Nodes returns the cluster's nodes, in the order of their slot ranges at
// start (node i first served the i-th k-th of the slots). The slice is a
// copy; the Servers are the cluster's own: Close closes them.
func (c *Cluster) Nodes() []*Server { return append([]*Server(nil), c.nodes...) }

// Addrs returns the nodes' "127.0.0.1:port" addresses, in the order of
// Nodes.
func (c *Cluster) Addrs() []string { return Addrs(c.nodes) }

// Close kills every node and removes its directory. It returns the first
// error removing a directory. Closing twice is not an error.
func (c *Cluster) Close() error {
	var errs []error
	for _, s := range append(c.nodes, c.replicas...) {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// KillNode stops node i (of Nodes) with SIGKILL and waits for it to exit,
// as Server.Kill does. The other nodes flag it as failing after the node
// timeout (1 second unless extra changed it) and failure reports from a
// majority of the masters. With Redis' default
// cluster-require-full-coverage yes, the whole cluster then reports
// cluster_state:fail and every node answers every key command with
// CLUSTERDOWN; with --cluster-require-full-coverage no, the other nodes
// keep serving their slots, and answer MOVED to the dead node's address
// for its slots. Nodes()[i].Start starts it again, empty but with its
// nodes.conf (same node ID, slots and epochs): it rejoins, and the others
// clear its failure flag and, with full coverage, bring the cluster back
// up, about two seconds later. Killing a dead node is not an error; i out
// of range is.
func (c *Cluster) KillNode(i int) error {
	if i < 0 || i >= len(c.nodes) {
		return fmt.Errorf("distlocktest: no cluster node %d (cluster of %d)", i, len(c.nodes))
	}
	return c.nodes[i].Kill()
}

// AddReplica starts a replica of node i (of Nodes): a redis-server with the
// cluster's arguments, joined with CLUSTER MEET and made node i's replica
// with CLUSTER REPLICATE. It waits, at most 15 seconds, until the replica
// is in sync (master_link_status:up) and every node lists it in CLUSTER
// SLOTS. Killing node i then has the cluster promote the replica, about
// two seconds after the node timeout; it takes node i's slots, at its own
// address. The replica is not one of Nodes; Close stops it.
func (c *Cluster) AddReplica(i int) (*Server, error) {
	if i < 0 || i >= len(c.nodes) {
		return nil, fmt.Errorf("distlocktest: no cluster node %d (cluster of %d)", i, len(c.nodes))
	}
	r, err := StartServer(c.args...)
	if err != nil {
		return nil, err
	}
	c.replicas = append(c.replicas, r)
	host, port, _ := net.SplitHostPort(c.nodes[i].Addr())
	if _, err := r.Do("CLUSTER", "MEET", host, port); err != nil {
		return nil, fmt.Errorf("distlocktest: CLUSTER MEET on %s: %w", r.Addr(), err)
	}
	// The first sync at once, not after redis' default 5 seconds.
	if _, err := c.nodes[i].Do("CONFIG", "SET", "repl-diskless-sync-delay", "0"); err != nil {
		return nil, fmt.Errorf("distlocktest: CONFIG SET on %s: %w", c.nodes[i].Addr(), err)
	}
	deadline := time.Now().Add(clusterReadyTimeout)
	replicating := false
	for {
		// It must know node i (gossip) before it can replicate it, then be
		// in sync, and known to every node as node i's replica.
		var err error
		if !replicating {
			_, err = r.Do("CLUSTER", "REPLICATE", c.ids[i])
			replicating = err == nil
		}
		if err == nil {
			err = c.replicaReady(r)
		}
		if err == nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("distlocktest: replica %s of %s not ready after %v: %w", r.Addr(), c.nodes[i].Addr(), clusterReadyTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// replicaReady returns nil if r is in sync with its master and every node
// lists it as a replica in CLUSTER SLOTS.
func (c *Cluster) replicaReady(r *Server) error {
	info, err := redis.String(r.Do("INFO", "replication"))
	if err != nil {
		return err
	}
	if st := infoField(info, "master_link_status"); st != "up" {
		return fmt.Errorf("master_link_status:%s", st)
	}
	for _, s := range c.nodes {
		v, err := redis.Values(s.Do("CLUSTER", "SLOTS"))
		if err != nil {
			return err
		}
		if !listsReplica(v, r.Addr()) {
			return fmt.Errorf("node %s does not list the replica yet", s.Addr())
		}
	}
	return nil
}

// listsReplica reports whether a CLUSTER SLOTS reply lists addr as a
// replica of some range.
func listsReplica(slots []any, addr string) bool {
	for _, row := range slots {
		f, _ := row.([]any)
		for j := 3; j < len(f); j++ { // start, end, master, replicas...
			n, _ := redis.Values(f[j], nil)
			if len(n) < 2 {
				continue
			}
			host, _ := redis.String(n[0], nil)
			port, _ := redis.Int(n[1], nil)
			if net.JoinHostPort(host, strconv.Itoa(port)) == addr {
				return true
			}
		}
	}
	return false
}

// SlotOf returns key's Redis Cluster hash slot, from 0 to 16383: CRC16
// (XMODEM: polynomial 0x1021, initial value 0) of the key modulo 16384,
// as CLUSTER KEYSLOT computes it. If the key holds a '{', a '}' after the
// first '{', and at least one byte between that '{' and the first '}'
// after it, only those bytes are hashed (the hash tag: "{user1}:a" hashes
// "user1"); otherwise the whole key is, so "a{}b" and "{}{x}" hash whole.
func (c *Cluster) SlotOf(key string) int { return keySlot(key) }

func keySlot(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if n := strings.IndexByte(key[open+1:], '}'); n > 0 {
			key = key[open+1 : open+1+n]
		}
	}
	return int(crc16(key) & (ClusterSlots - 1))
}

// crc16 is CRC-16/XMODEM, bit by bit, most significant bit first.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// NodeFor returns the node that owns key's slot (see SlotOwner), or nil
// when no node answers or the slot has no owner.
func (c *Cluster) NodeFor(key string) *Server {
	s, _ := c.SlotOwner(keySlot(key))
	return s
}

// SlotOwner returns the node that owns slot, as the first node of Nodes
// that answers CLUSTER SLOTS sees it. During a migration (BeginMigration)
// the owner is still the source, until Finish. It returns an error for a
// slot out of range, when no node answers, or when the slot has no owner
// or one that is not a node of c.
func (c *Cluster) SlotOwner(slot int) (*Server, error) {
	if slot < 0 || slot >= ClusterSlots {
		return nil, fmt.Errorf("distlocktest: slot %d out of range", slot)
	}
	var lastErr error
	for _, s := range c.nodes {
		if s.PID() == 0 {
			continue
		}
		owners, err := c.slotMap(s)
		if err != nil {
			lastErr = err
			continue
		}
		o := owners[slot]
		if o.node < 0 {
			return nil, fmt.Errorf("distlocktest: slot %d has no owner known to %s (owner id %q)", slot, s.Addr(), o.id)
		}
		return c.nodes[o.node], nil
	}
	if lastErr == nil {
		lastErr = errors.New("all nodes are down")
	}
	return nil, fmt.Errorf("distlocktest: owner of slot %d: %w", slot, lastErr)
}

// slotOwner is one slot's owner in a node's CLUSTER SLOTS.
type slotOwner struct {
	node int    // index in Cluster.nodes, or -1
	id   string // node ID, "" for a slot without owner
	addr string // "ip:port" as the node announces it
}

// slotMap returns the owner of every slot as s sees it (CLUSTER SLOTS).
func (c *Cluster) slotMap(s *Server) ([]slotOwner, error) {
	v, err := redis.Values(s.Do("CLUSTER", "SLOTS"))
	if err != nil {
		return nil, fmt.Errorf("distlocktest: CLUSTER SLOTS on %s: %w", s.Addr(), err)
	}
	owners := make([]slotOwner, ClusterSlots)
	for i := range owners {
		owners[i].node = -1
	}
	for _, r := range v {
		// [start, end, [ip, port, id, ...], replicas...]
		rv, err := redis.Values(r, nil)
		if err != nil || len(rv) < 3 {
			return nil, fmt.Errorf("distlocktest: CLUSTER SLOTS on %s: bad range %v", s.Addr(), r)
		}
		lo, err1 := redis.Int(rv[0], nil)
		hi, err2 := redis.Int(rv[1], nil)
		mv, err3 := redis.Values(rv[2], nil)
		if err1 != nil || err2 != nil || err3 != nil || len(mv) < 3 || lo < 0 || hi >= ClusterSlots || lo > hi {
			return nil, fmt.Errorf("distlocktest: CLUSTER SLOTS on %s: bad range %v", s.Addr(), r)
		}
		ip, _ := redis.String(mv[0], nil)
		port, _ := redis.Int(mv[1], nil)
		id, _ := redis.String(mv[2], nil)
		o := slotOwner{node: c.index(id), id: id, addr: net.JoinHostPort(ip, strconv.Itoa(port))}
		for slot := lo; slot <= hi; slot++ {
			owners[slot] = o
		}
	}
	return owners, nil
}

// index returns the index of the node with the ID id, or -1.
func (c *Cluster) index(id string) int {
	for i, x := range c.ids {
		if x == id {
			return i
		}
	}
	return -1
}

// indexOf returns the index of s among the nodes, or -1.
func (c *Cluster) indexOf(s *Server) int {
	for i, x := range c.nodes {
		if x == s {
			return i
		}
	}
	return -1
}

// waitAgree waits, at most clusterReadyTimeout, until every running node
// sees want[slot] as the owner of every slot, at the owner's address, and,
// if ok, reports cluster_state:ok and knows every node.
func (c *Cluster) waitAgree(want []int, ok bool) error {
	deadline := time.Now().Add(clusterReadyTimeout)
	for {
		err := c.agree(want, ok)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("distlocktest: cluster not ready after %v: %w", clusterReadyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agree returns nil if every running node agrees with want (see waitAgree),
// or an error that says the first way one does not.
func (c *Cluster) agree(want []int, ok bool) error {
	for _, s := range c.nodes {
		if s.PID() == 0 {
			continue
		}
		if ok {
			info, err := redis.String(s.Do("CLUSTER", "INFO"))
			if err != nil {
				return fmt.Errorf("CLUSTER INFO on %s: %w", s.Addr(), err)
			}
			state, known := infoField(info, "cluster_state"), infoField(info, "cluster_known_nodes")
			if state != "ok" || known != strconv.Itoa(len(c.nodes)) {
				return fmt.Errorf("node %s: cluster_state:%s, cluster_known_nodes:%s of %d", s.Addr(), state, known, len(c.nodes))
			}
		}
		owners, err := c.slotMap(s)
		if err != nil {
			return err
		}
		for slot, o := range owners {
			if w := want[slot]; o.node != w || o.addr != c.nodes[w].Addr() {
				return fmt.Errorf("node %s sees slot %d at %q (id %q), want %s (id %s)", s.Addr(), slot, o.addr, o.id, c.nodes[w].Addr(), c.ids[w])
			}
		}
	}
	return nil
}

// infoField returns the value of name in a CLUSTER INFO or INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// migrateBatch is how many keys one MIGRATE moves.
const migrateBatch = 100

// Migration is one slot being moved from its owner (the source) to another
// node (the target), between BeginMigration and Finish. Meanwhile the
// source serves the slot's keys it still holds and answers
// "ASK <slot> <target address>" for the others (moved or never there); the
// target serves the moved keys to a client that sends ASKING first on the
// same connection, and answers MOVED to the source without it. A Migration
// is not safe for concurrent use.
type Migration struct {
	c        *Cluster
	slot     int
	src, dst *Server
	srcID    string
	dstID    string
}

// MigrateSlot moves slot, with its keys, from its owner to the node to, the
// way redis-cli does: BeginMigration, then Finish. It returns an error for
// a slot out of range, a to that is not one of Nodes, is down or already
// owns the slot, and for any step that fails, which leaves the slot
// mid-migration (see Migration).
func (c *Cluster) MigrateSlot(slot int, to *Server) error {
	m, err := c.BeginMigration(slot, to)
	if err != nil {
		return err
	}
	return m.Finish()
}

// BeginMigration starts moving slot from its owner (SlotOwner) to the node
// to, and moves no key: CLUSTER SETSLOT <slot> IMPORTING <source id> on to,
// then CLUSTER SETSLOT <slot> MIGRATING <to's id> on the source. From then
// on the source answers ASK for the slot's keys it does not hold (see
// Migration). It returns an error for a slot out of range, a to that is not
// one of Nodes, is down or already owns the slot, or a CLUSTER SETSLOT that
// fails.
func (c *Cluster) BeginMigration(slot int, to *Server) (*Migration, error) {
	dst := c.indexOf(to)
	if dst < 0 {
		return nil, errors.New("distlocktest: migration target is not a node of the cluster")
	}
	if to.PID() == 0 {
		return nil, fmt.Errorf("distlocktest: migration target %s is down", to.Addr())
	}
	from, err := c.SlotOwner(slot)
	if err != nil {
		return nil, err
	}
	if from == to {
		return nil, fmt.Errorf("distlocktest: slot %d is already on %s", slot, to.Addr())
	}
	m := &Migration{c: c, slot: slot, src: from, dst: to, srcID: c.ids[c.indexOf(from)], dstID: c.ids[dst]}
	if _, err := to.Do("CLUSTER", "SETSLOT", slot, "IMPORTING", m.srcID); err != nil {
		return nil, fmt.Errorf("distlocktest: CLUSTER SETSLOT %d IMPORTING on %s: %w", slot, to.Addr(), err)
	}
	if _, err := from.Do("CLUSTER", "SETSLOT", slot, "MIGRATING", m.dstID); err != nil {
		return nil, fmt.Errorf("distlocktest: CLUSTER SETSLOT %d MIGRATING on %s: %w", slot, from.Addr(), err)
	}
	return m, nil
}

// Slot returns the slot being moved.
func (m *Migration) Slot() int { return m.slot }

// Source returns the node the slot is moved from.
func (m *Migration) Source() *Server { return m.src }

// Target returns the node the slot is moved to.
func (m *Migration) Target() *Server { return m.dst }

// MoveKeys moves every key of the slot still on the source to the target:
// CLUSTER GETKEYSINSLOT, then MIGRATE ... KEYS in batches of 100, until the
// source holds none. A key that exists on both nodes (one created on the
// target through ASKING) fails the MIGRATE with BUSYKEY, as in redis-cli
// without --cluster-replace: the error is returned, the key left on the
// source.
func (m *Migration) MoveKeys() error {
	for {
		keys, err := redis.Strings(m.src.Do("CLUSTER", "GETKEYSINSLOT", m.slot, migrateBatch))
		if err != nil {
			return fmt.Errorf("distlocktest: CLUSTER GETKEYSINSLOT %d on %s: %w", m.slot, m.src.Addr(), err)
		}
		if len(keys) == 0 {
			return nil
		}
		if err := m.migrate(keys); err != nil {
			return err
		}
	}
}

// MoveKey moves one key of the slot from the source to the target (MIGRATE
// ... KEYS key), to hold a slot with some keys moved and others not. A key
// the source does not hold is not an error; a key of another slot is.
func (m *Migration) MoveKey(key string) error {
	if s := keySlot(key); s != m.slot {
		return fmt.Errorf("distlocktest: key %q is in slot %d, not in the migrating slot %d", key, s, m.slot)
	}
	return m.migrate([]string{key})
}

// migrate runs MIGRATE on the source for keys, to the target.
func (m *Migration) migrate(keys []string) error {
	host, port, _ := net.SplitHostPort(m.dst.Addr())
	args := []any{host, port, "", 0, 5000}
	if pw := password(m.dst.extra); pw != "" {
		args = append(args, "AUTH", pw)
	}
	args = append(args, "KEYS")
	for _, k := range keys {
		args = append(args, k)
	}
	if _, err := m.src.doTimeout(10*time.Second, "MIGRATE", args...); err != nil {
		return fmt.Errorf("distlocktest: MIGRATE of %d keys of slot %d from %s to %s: %w", len(keys), m.slot, m.src.Addr(), m.dst.Addr(), err)
	}
	return nil
}

// Finish completes the migration: it moves the keys still on the source
// (MoveKeys), then sends CLUSTER SETSLOT <slot> NODE <target id> to the
// target, then to the source, then to every other running node, and waits,
// at most 15 seconds, until every running node sees the target as the
// slot's owner. Afterwards the target serves the slot and the others
// answer MOVED to it.
func (m *Migration) Finish() error {
	if err := m.MoveKeys(); err != nil {
		return err
	}
	order := []*Server{m.dst, m.src}
	for _, s := range m.c.nodes {
		if s != m.dst && s != m.src && s.PID() != 0 {
			order = append(order, s)
		}
	}
	for _, s := range order {
		if _, err := s.Do("CLUSTER", "SETSLOT", m.slot, "NODE", m.dstID); err != nil {
			return fmt.Errorf("distlocktest: CLUSTER SETSLOT %d NODE on %s: %w", m.slot, s.Addr(), err)
		}
	}
	deadline := time.Now().Add(clusterReadyTimeout)
	for {
		err := m.agree()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("distlocktest: slot %d moved to %s: %w", m.slot, m.dst.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agree returns nil if every running node sees the target as the slot's
// owner.
func (m *Migration) agree() error {
	for _, s := range m.c.nodes {
		if s.PID() == 0 {
			continue
		}
		owners, err := m.c.slotMap(s)
		if err != nil {
			return err
		}
		if o := owners[m.slot]; o.id != m.dstID {
			return fmt.Errorf("node %s still sees the slot at %q (id %q)", s.Addr(), o.addr, o.id)
		}
	}
	return nil
}

// password returns the --requirepass argument in extra, or "".
func password(extra []string) string {
	pw := ""
	for i := 0; i+1 < len(extra); i++ {
		if extra[i] == "--requirepass" {
			pw = extra[i+1]
		}
	}
	return pw
}

// doTimeout is Do with a read and write timeout of d, for a command that
// may take longer than a second (MIGRATE).
func (s *Server) doTimeout(d time.Duration, cmd string, args ...any) (any, error) {
	opts := []redis.DialOption{redis.DialConnectTimeout(time.Second), redis.DialReadTimeout(d), redis.DialWriteTimeout(d)}
	if pw := password(s.extra); pw != "" {
		opts = append(opts, redis.DialPassword(pw))
	}
	c, err := redis.Dial("tcp", s.Addr(), opts...)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}
