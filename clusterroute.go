package distlock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

const (
	// numSlots is the number of Redis Cluster hash slots.
	numSlots = 16384
	// maxRedirects bounds the MOVED and ASK replies one command follows:
	// more means the slot map is in flux, and the command fails (a
	// transient failure: its round's retry takes over).
	maxRedirects = 5
	// maxNodes bounds the node transports of one cluster master, against
	// redirects that name ever new addresses.
	maxNodes = 1000
	// tryAgainAfter is how long a command refused with TRYAGAIN (its keys
	// split between two nodes by a slot being moved) waits before it is
	// sent again.
	tryAgainAfter = 25 * time.Millisecond
	// refreshEvery is how often the slot map is read again while a node
	// is suspected down (its slots may move to a promoted replica);
	// refreshMin is the least time between two reads.
	refreshEvery = time.Second
	refreshMin   = 100 * time.Millisecond
)

// route sends a cluster master's commands to the nodes that own their
// slots, each node over its own pipelined transport (a master of its own,
// with its own connection, checks and restart fence). The master the
// Client was given, the first seed node's transport, owns the route.
//
// Routing starts at the first MOVED or ASK reply, or at once when several
// seeds are given: until then every command goes to the seed, so a plain
// master or a one-node cluster costs one atomic load per command. Then the
// slot map is read (CLUSTER SLOTS) and kept current: a MOVED reply moves
// its slot at once and reads the map again; while a node that owns slots
// is suspected down, the map is read every refreshEvery, so its slots
// follow a promoted replica. A command answered MOVED or ASK did not run,
// so it is sent to the node named (after ASKING, on the same connection,
// for ASK), at most maxRedirects times.
//
// Two rules keep a release behind what it releases when a slot changes
// owner. A release (a command that may run late, see command.resend) sent
// shortly after its slot moved goes to the slot's previous owner, behind
// any acquire still in flight there; that node answers MOVED to both, and
// its reader redirects them in order. And a release that a node suspected
// down could not take is kept by the route, not by the node, and sent
// again by slot after every read of the map and whenever a node comes
// back, so it reaches a promoted replica that took the slot.
type route struct {
	seed  *master                       // the Client's master
	dial  func(addr string) *redis.Pool // the pool of a discovered node
	seeds []string                      // the other seed nodes' addresses (host:port)
	// settle: how long after a slot moved its releases go to its previous
	// owner (twice the master timeout: an acquire waits at most that long
	// in a node's pipeline before the node is suspected down).
	settle time.Duration

	active atomic.Bool // commands are routed by slot
	table  atomic.Pointer[[numSlots]atomic.Pointer[slotOwner]]

	kick chan struct{} // wakes the refresher
	// subs: the Client's sharded subscriptions on this cluster, placed
	// again after every read of the map.
	subs atomic.Pointer[shardSubs]

	mu       sync.Mutex
	nodes    map[string]*master // by address, the seed's included
	replicas map[string]bool    // addresses a slot map listed as replicas
	pools    []*redis.Pool      // the nodes' pools, closed by close
	started  bool               // the refresher runs
	closed   bool
	last     time.Time      // the last read of the map (the refresher's own: not under mu)
	seedID   string         // the seed's cluster node ID, once read
	kept     []*command     // releases a node suspected down could not take
	shared   bool           // reported: another master is a node of this cluster
	stop     chan struct{}  // closed by close: ends the waits of tryAgain
	waits    sync.WaitGroup // tryAgain's goroutines
}

// slotOwner is a slot's entry in the map: its owner, and the owner before
// it since when (see route).
type slotOwner struct {
	node, prev *master
	since      time.Time
}

// newRoute returns the route of seed, the master given to NewClient at
// address (host:port, as a cluster names its nodes), with the other seeds
// given for it; call it before the seed starts.
func newRoute(seed *master, address string, dial func(addr string) *redis.Pool, seeds []string) *route {
	r := &route{seed: seed, dial: dial, seeds: seeds, settle: 2 * seed.timeout, kick: make(chan struct{}, 1), stop: make(chan struct{}),
		nodes: map[string]*master{address: seed}, replicas: map[string]bool{}}
	seed.router = r
	if len(seeds) > 0 {
		// A cluster for sure: route from the start, so that a seed that is
		// down does not hide the others.
		r.mu.Lock()
		r.activate()
		r.mu.Unlock()
	}
	return r
}

// submit queues c on the node that owns its slot (the seed while the slot
// is not known, or c has no key).
func (r *route) submit(c *command) {
	key, ok := c.key()
	if !ok {
		r.seed.enqueue(c)
		return
	}
	o := r.table.Load()[keySlot(key)].Load()
	switch {
	case o == nil:
		r.seed.enqueue(c)
	case c.resend && o.prev != nil && o.prev.connected.Load() && time.Since(o.since) < r.settle:
		o.prev.enqueue(c) // behind what may still be in flight there (see route)
	default:
		o.node.enqueue(c)
	}
}

// key returns the first key c touches, if any.
func (c *command) key() (string, bool) {
	a := c.args
	if c.script != nil { // EVALSHA sha numkeys key...
		if len(a) < 3 || isZero(a[1]) {
			return "", false
		}
		return argString(a[2]), true
	}
	if len(a) == 0 {
		return "", false
	}
	return argString(a[0]), true
}

// isZero reports whether a key count is 0 (an int, without formatting it).
func isZero(v any) bool {
	if n, ok := v.(int); ok {
		return n == 0
	}
	return argString(v) == "0"
}

func argString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case int:
		return strconv.Itoa(v)
	default:
		return fmt.Sprint(v)
	}
}

// redirect follows a MOVED or ASK reply that node from gave to c: it sends
// c to the node named and reports true, or reports false when err is no
// redirect or cannot be followed (c is then answered with err).
func (r *route) redirect(from *master, c *command, err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	f := strings.Fields(string(re))
	if len(f) != 3 || f[0] != "MOVED" && f[0] != "ASK" {
		return false
	}
	slot, perr := strconv.Atoi(f[1])
	// host:port, the host unbracketed even when it is an IPv6 address.
	i := strings.LastIndexByte(f[2], ':')
	if perr != nil || slot < 0 || slot >= numSlots || i < 0 {
		return false
	}
	host, port := f[2][:i], f[2][i+1:]
	if host == "" || host == "?" { // the node does not know its address: the one that answered's
		host, _, _ = net.SplitHostPort(from.addr)
	}
	if c.redirects >= maxRedirects {
		c.deliver(nil, fmt.Errorf("distlock: cluster node %s redirected a command %d times (last: %s): the slot map is changing", from.addr, c.redirects, re))
		return true
	}
	n := r.node(net.JoinHostPort(host, port), false)
	if n == nil {
		return false // closed, or too many nodes
	}
	c.redirects++
	c.asking = f[0] == "ASK" // ASK: this once, and the map stays
	if !c.asking && r.setOwner(slot, n, from) {
		r.refreshSoon() // the map changed: read it all
	}
	n.enqueue(c)
	return true
}

// tryAgain sends c again after tryAgainAfter, by slot: a node refused it
// with TRYAGAIN, so it did not run. It reports false when c has followed
// maxRedirects redirects and retries already, or the route is closed: c is
// then answered with the refusal.
func (r *route) tryAgain(c *command) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || c.redirects >= maxRedirects {
		return false
	}
	c.redirects++
	c.asking = false
	r.waits.Add(1)
	go func() {
		defer r.waits.Done()
		t := time.NewTimer(tryAgainAfter)
		defer t.Stop()
		select {
		case <-t.C:
			r.submit(c)
		case <-r.stop:
			c.deliver(nil, ErrClosed)
		}
	}()
	return true
}

// activate starts routing by slot, and the refresher (r.mu held).
func (r *route) activate() {
	if r.started || r.closed {
		return
	}
	r.started = true
	r.table.Store(new([numSlots]atomic.Pointer[slotOwner]))
	r.active.Store(true)
	r.seed.wg.Add(1)
	go r.refresher()
	r.refreshSoon()
}

// refreshSoon asks the refresher to read the slot map again.
func (r *route) refreshSoon() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// node returns the transport to the node at addr, made on first use; nil
// after close or past maxNodes. A node made as promoted, or that a slot map
// listed as a replica, gets the restart fence at its first check, as a
// replica promoted since the last check does (see master.learn).
func (r *route) node(addr string, promoted bool) *master {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := r.nodes[addr]; ok || r.closed {
		return n
	}
	if len(r.nodes) >= maxNodes {
		return nil
	}
	r.activate() // the first redirect
	s := r.seed
	p := r.dial(addr)
	r.pools = append(r.pools, p)
	n := makeMaster(addr, p, s.cfg, s.obs, s.policy)
	n.router = r
	if promoted || r.replicas[addr] {
		n.role = "slave"
	}
	n.start()
	r.nodes[addr] = n
	return n
}

// refresher reads the slot map when kicked, and every refreshEvery while a
// node is suspected down, until the seed closes.
func (r *route) refresher() {
	defer r.seed.wg.Done()
	// The channels wanted so far, by slot: the scripts announce with
	// SPUBLISH from now on. Slots not known yet are the seed's; a node
	// that does not own one refuses it, which reads the map.
	if s := r.subs.Load(); s != nil {
		s.rehome()
	}
	t := time.NewTimer(refreshEvery)
	defer t.Stop()
	for {
		select {
		case <-r.seed.closing:
			return
		case <-r.kick:
		case <-t.C:
			if !r.anyDown() {
				t.Reset(refreshEvery)
				continue
			}
		}
		if wait := refreshMin - time.Since(r.last); wait > 0 {
			select {
			case <-r.seed.closing:
				return
			case <-time.After(wait):
			}
		}
		r.last = time.Now()
		r.refresh()
		t.Reset(refreshEvery)
	}
}

// anyDown reports whether a node that owns slots is suspected down.
func (r *route) anyDown() bool {
	table := r.table.Load()
	var last *slotOwner
	for i := range table {
		o := table[i].Load()
		if o == nil || o == last {
			continue
		}
		last = o
		if o.node.downErr() != nil {
			return true
		}
	}
	return false
}

// refresh reads the slot map from the first node that answers (the seed
// and the other nodes not suspected down, the other seeds given, then the
// seed if it is suspected down) and applies it.
func (r *route) refresh() {
	r.mu.Lock()
	asked := make([]*master, 0, len(r.nodes)+len(r.seeds)+1)
	seedDown := r.seed.downErr() != nil
	if !seedDown {
		asked = append(asked, r.seed)
	}
	for _, n := range r.nodes {
		if n != r.seed && n.downErr() == nil {
			asked = append(asked, n)
		}
	}
	r.mu.Unlock()
	for _, addr := range r.seeds {
		if n := r.node(addr, false); n != nil && !slices.Contains(asked, n) {
			asked = append(asked, n)
		}
	}
	if seedDown { // last: a dial to a dead node may take the dial timeout
		asked = append(asked, r.seed)
	}
	for _, n := range asked {
		slots, id, err := readSlots(n, n == r.seed)
		if err != nil {
			continue
		}
		if id != "" {
			r.mu.Lock()
			r.seedID = id
			r.mu.Unlock()
		}
		r.apply(slots)
		if s := r.subs.Load(); s != nil {
			s.rehome()
		}
		r.retryKept()
		return
	}
}

// owner returns the node that owns key's slot in the map: the seed while
// the slot is not known.
func (r *route) owner(key string) *master {
	if o := r.table.Load()[keySlot(key)].Load(); o != nil {
		return o.node
	}
	return r.seed
}

// setOwner makes n the owner of slot, as node from said (MOVED), and
// reports whether that changed the map.
func (r *route) setOwner(slot int, n, from *master) bool {
	e := &r.table.Load()[slot]
	if old := e.Load(); old != nil && old.node == n {
		return false
	}
	e.Store(&slotOwner{node: n, prev: from, since: time.Now()})
	return true
}

// keep keeps a copy of the release c, which a node suspected down could
// not take, to send again by slot (see route).
func (r *route) keep(c *command) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed && len(r.kept) < maxDeferred {
		r.kept = append(r.kept, c.detached())
	}
}

// retryKept sends the kept releases again by slot; those that land on a
// node still down are kept again.
func (r *route) retryKept() {
	r.mu.Lock()
	kept := r.kept
	r.kept = nil
	r.mu.Unlock()
	for _, c := range kept {
		r.submit(c)
	}
}

// slotRange is one range of a slot map: its owner and replicas.
type slotRange struct {
	lo, hi   int
	owner    string
	ownerID  string
	replicas []string
}

// readSlots runs CLUSTER SLOTS on a connection to the node n and, if myID,
// CLUSTER MYID too.
func readSlots(n *master, myID bool) (slots []slotRange, id string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), n.dialTimeout)
	defer cancel()
	conn, err := n.pool.GetContext(ctx)
	if err != nil {
		return nil, "", err
	}
	defer conn.Close()
	v, err := receiveOrDo(conn, n.timeout, "CLUSTER", "SLOTS")
	if err != nil {
		return nil, "", err
	}
	host, _, _ := net.SplitHostPort(n.addr)
	if slots, err = parseSlots(v, host); err != nil {
		return nil, "", err
	}
	if myID {
		id, _ = redis.String(receiveOrDo(conn, n.timeout, "CLUSTER", "MYID"))
	}
	return slots, id, nil
}

// parseSlots parses a CLUSTER SLOTS reply; a node with no address given is
// at host (the node asked).
func parseSlots(v any, host string) ([]slotRange, error) {
	rows, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("CLUSTER SLOTS: unexpected reply %T", v)
	}
	var out []slotRange
	for _, row := range rows {
		f, ok := row.([]any)
		if !ok || len(f) < 3 {
			return nil, errors.New("CLUSTER SLOTS: malformed range")
		}
		lo, err1 := redis.Int(f[0], nil)
		hi, err2 := redis.Int(f[1], nil)
		if err1 != nil || err2 != nil || lo < 0 || hi < lo || hi >= numSlots {
			return nil, errors.New("CLUSTER SLOTS: malformed range")
		}
		sr := slotRange{lo: lo, hi: hi}
		for i, node := range f[2:] {
			nf, ok := node.([]any)
			if !ok || len(nf) < 2 {
				return nil, errors.New("CLUSTER SLOTS: malformed node")
			}
			h, _ := redis.String(nf[0], nil)
			port, err := redis.Int(nf[1], nil)
			if err != nil || port < 1 || port > 65535 {
				return nil, errors.New("CLUSTER SLOTS: malformed node")
			}
			if h == "" || h == "?" {
				h = host
			}
			addr := net.JoinHostPort(h, strconv.Itoa(port))
			if i == 0 {
				sr.owner = addr
				if len(nf) > 2 {
					sr.ownerID, _ = redis.String(nf[2], nil)
				}
			} else {
				sr.replicas = append(sr.replicas, addr)
			}
		}
		out = append(out, sr)
	}
	return out, nil
}

// apply makes slots the map: each range's owner gets its slots, and its
// replicas are remembered (see node). A node new to this Client that takes
// over the slots of a node suspected down is taken for a promoted replica.
func (r *route) apply(slots []slotRange) {
	r.mu.Lock()
	for _, sr := range slots {
		for _, a := range sr.replicas {
			r.replicas[a] = true
		}
		if r.seedID != "" && sr.ownerID == r.seedID {
			// The seed, as the cluster names it (the seed may have been
			// given by another name): one transport per node.
			if _, known := r.nodes[sr.owner]; !known {
				r.nodes[sr.owner] = r.seed
			}
		}
	}
	r.mu.Unlock()
	r.checkShared(slots)
	table := r.table.Load()
	now := time.Now()
	for _, sr := range slots {
		old := table[sr.lo].Load()
		n := r.node(sr.owner, old != nil && old.node.addr != sr.owner && old.node.downErr() != nil)
		if n == nil {
			continue
		}
		made := map[*master]*slotOwner{} // one entry per previous owner, shared by the range's slots
		for s := sr.lo; s <= sr.hi; s++ {
			old := table[s].Load()
			if old != nil && old.node == n {
				continue
			}
			prev := r.seed
			if old != nil {
				prev = old.node
			}
			e := made[prev]
			if e == nil {
				e = &slotOwner{node: n, prev: prev, since: now}
				made[prev] = e
			}
			table[s].Store(e)
		}
	}
}

// checkShared reports, once, a node of this cluster that is a node of
// another master's too: two masters that are one cluster count twice
// toward the quorum, and fail together.
func (r *route) checkShared(slots []slotRange) {
	for _, sr := range slots {
		if sr.ownerID == "" {
			continue
		}
		v, loaded := r.seed.policy.clusterNodes.LoadOrStore(sr.ownerID, r)
		if other := v.(*route); loaded && other != r {
			r.mu.Lock()
			first := !r.shared
			r.shared = true
			r.mu.Unlock()
			if first && r.seed.obs.on {
				r.seed.obs.report(Event{Kind: EventMasterWarning, Master: r.seed.addr, Err: fmt.Errorf(
					"distlock: masters %s and %s are nodes of one Redis Cluster: it counts twice toward the quorum, and its failure takes both", other.seed.addr, r.seed.addr)})
			}
			return
		}
	}
}

// close stops the node transports (the seed's caller closes the seed) and
// their pools.
func (r *route) close() {
	r.mu.Lock()
	if !r.closed {
		close(r.stop)
	}
	r.closed = true
	nodes := make([]*master, 0, len(r.nodes))
	for _, n := range r.nodes {
		if n != r.seed {
			nodes = append(nodes, n)
		}
	}
	pools := r.pools
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.close()
		}()
	}
	wg.Wait()
	r.waits.Wait()
	for _, p := range pools {
		_ = p.Close()
	}
}

// nodeStats returns the stats of the nodes other than the seed, by address.
func (r *route) nodeStats() []MasterStats {
	r.mu.Lock()
	nodes := make([]*master, 0, len(r.nodes))
	for _, n := range r.nodes {
		if n != r.seed {
			nodes = append(nodes, n)
		}
	}
	r.mu.Unlock()
	slices.SortFunc(nodes, func(a, b *master) int { return cmp.Compare(a.addr, b.addr) })
	out := make([]MasterStats, len(nodes))
	for i, n := range nodes {
		out[i], _ = n.stats()
	}
	return out
}
