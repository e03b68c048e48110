package distlock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/gomodule/redigo/redis"
)

// ErrMasterFenced matches the failure of a request that was not sent because
// its master is fenced: it restarted or was promoted too recently to count
// toward a quorum (see WithRestartFence), it is a replica, or, with
// WithStrictMasters, it failed a check. Holders and waiters see it as
// unavailable, as a master that is down; a replica's fence also matches
// ErrPermanent, as its READONLY would. Releases are still sent to it.
var ErrMasterFenced = errors.New("distlock: master fenced")

// recheckEvery is how long a master fenced for a failed check (a replica,
// or WithStrictMasters) stays fenced before it is checked again, before the
// next request (a variable for tests).
var recheckEvery = 5 * time.Second

// fencePolicy is the Client's restart fence and master checks, shared by its
// masters.
type fencePolicy struct {
	off     bool          // WithoutRestartFence
	strict  bool          // WithStrictMasters
	least   time.Duration // WithRestartFence, or DefaultTTL plus its drift
	longest atomic.Int64  // the longest TTL plus drift of the Client's locks
	clock   clock.Clock
	// clusterNodes maps the cluster node IDs seen in the Client's slot maps
	// to their route: two masters that are one cluster are reported.
	clusterNodes sync.Map
}

// noteTTL records a lock's TTL plus drift: the fence lasts at least that.
func (f *fencePolicy) noteTTL(d time.Duration) {
	for {
		cur := f.longest.Load()
		if int64(d) <= cur || f.longest.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// length is how long a master that lost its keys stays fenced: the longest
// a lock key it held could still be alive elsewhere.
func (f *fencePolicy) length() time.Duration {
	return max(f.least, time.Duration(f.longest.Load()))
}

// masterInfo is what the Client learns of a master from INFO on every new
// connection, and on a live one after an idle spell or a reply that says
// its role changed.
type masterInfo struct {
	runID           string // changes on every start of the server process
	replID          string // the replication id: new on a start without data or a promotion
	replID2         string // the id a promoted replica continues; all zeros when none
	role            string // "master" or "slave"
	uptime          time.Duration
	connectedSlaves int
	maxmemory       int64
	maxmemoryPolicy string
	clusterEnabled  bool // a Redis Cluster node: a script call must touch one slot
}

// parseInfo reads the fields of INFO's reply that masterInfo keeps. It
// fails when run_id or role is missing (not a Redis INFO reply).
func parseInfo(reply []byte) (masterInfo, error) {
	var mi masterInfo
	sc := bufio.NewScanner(bytes.NewReader(reply))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch k {
		case "run_id":
			mi.runID = v
		case "master_replid":
			mi.replID = v
		case "master_replid2":
			mi.replID2 = v
		case "role":
			mi.role = v
		case "uptime_in_seconds":
			n, _ := strconv.ParseInt(v, 10, 64)
			mi.uptime = time.Duration(max(n, 0)) * time.Second
		case "connected_slaves":
			mi.connectedSlaves, _ = strconv.Atoi(v)
		case "maxmemory":
			mi.maxmemory, _ = strconv.ParseInt(v, 10, 64)
		case "maxmemory_policy":
			mi.maxmemoryPolicy = v
		case "cluster_enabled":
			mi.clusterEnabled = v == "1"
		}
	}
	if mi.runID == "" || mi.role == "" {
		return masterInfo{}, errors.New("INFO gave no run_id or role")
	}
	return mi, nil
}

// continues reports whether the master's replication history continues
// another's (master_replid2 set): a promotion, which may have lost writes.
func (mi masterInfo) continues() bool {
	return strings.Trim(mi.replID2, "0") != ""
}

// problem is what makes a master unfit to hold locks safely. fence: the
// master never counts while it has it (a replica, whose writes fail anyway);
// the others fence it only with WithStrictMasters.
type problem struct {
	text  string
	fence bool
}

// problems lists the master's problems.
func (mi masterInfo) problems() []problem {
	var p []problem
	if mi.role != "master" {
		p = append(p, replicaProblem(mi.role))
	}
	if mi.connectedSlaves > 0 {
		p = append(p, problem{fmt.Sprintf("has %d replica(s): replication is asynchronous, so a failover to one can lose lock keys", mi.connectedSlaves), false})
	}
	if mi.maxmemory > 0 && mi.maxmemoryPolicy != "noeviction" && mi.maxmemoryPolicy != "" {
		p = append(p, problem{fmt.Sprintf("maxmemory-policy %s with maxmemory %d can evict lock keys (they carry a TTL); use noeviction", mi.maxmemoryPolicy, mi.maxmemory), false})
	}
	return p
}

// checkMaster runs INFO on a new connection, before any lock traffic, and
// applies the restart fence and the master checks (see learn). It fails
// only when the connection fails.
func (m *master) checkMaster(conn redis.Conn) error {
	v, err := receiveOrDo(conn, m.timeout, "INFO")
	if err != nil && !isReplyError(err) {
		return err
	}
	m.applyInfo(v, err, true)
	return nil
}

// checkLive runs INFO on p, the writer's live connection, and waits for its
// answer before the writer sends anything else: so a master whose identity
// changed while the connection stayed open (demoted and promoted again,
// REPLICAOF, a proxy that moved the connection) is fenced before it gets a
// command. It fails only when the connection fails.
func (m *master) checkLive(p *pipe) error {
	ch := make(replyChan, 1)
	if err := p.write(m, append(p.batchSlice(), &command{name: "INFO", reply: ch})); err != nil {
		return err
	}
	r := <-ch // the reader answers, or fails it within the master timeout
	if r.err != nil && !isReplyError(r.err) {
		return r.err
	}
	m.applyInfo(r.val, r.err, false)
	return nil
}

// applyInfo learns from INFO's answer (see learn). A master whose INFO fails
// (refused by ACL, renamed) cannot be checked: it is reported, and fenced
// with WithStrictMasters.
func (m *master) applyInfo(v any, err error, newConn bool) {
	b, err := redis.Bytes(v, err)
	var mi masterInfo
	if err == nil {
		mi, err = parseInfo(b)
	}
	m.infoRefused.Store(err != nil)
	if err != nil {
		m.learn(masterInfo{}, []problem{{fmt.Sprintf("cannot be checked: INFO failed (%v); the restart fence and the checks need it: allow the command INFO to the ACL user", err), false}}, newConn)
		return
	}
	m.learn(mi, mi.problems(), newConn)
}

// replicaProblem is the problem of a master seen as a replica (role).
func replicaProblem(role string) problem {
	return problem{fmt.Sprintf("is a replica (role %s): it refuses writes, and when it is promoted it may lack lock keys its master had", role), true}
}

// isRoleChange reports whether a reply error says the server is not a
// writable master now (READONLY, MASTERDOWN, also inside a script's error,
// as Redis before 7 reports them) or is loading its data (LOADING): its
// identity may have changed on a live connection.
func isRoleChange(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	s := string(re)
	return strings.Contains(s, "READONLY") || strings.Contains(s, "MASTERDOWN") || strings.HasPrefix(s, "LOADING")
}

// learn applies what INFO told of the master, on a new connection (newConn)
// or a live one: it starts the restart fence when the master's identity
// changed since the last check or, at first contact, it started less than
// the fence length ago; and it fences the master for its problems (a
// replica always, the others with WithStrictMasters) until a check finds
// none, or reports them (on a new connection, and when they change).
func (m *master) learn(mi masterInfo, problems []problem, newConn bool) {
	f := m.policy
	now := f.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	news := false
	if !f.off && mi.runID != "" {
		length := f.length()
		var why string
		var until time.Time
		switch {
		case m.runID != "" && m.runID != mi.runID:
			// Restarted, or another server answers here: the keys it held
			// may be gone since any moment after our last answer from it.
			why, until = "restarted or was replaced since the last check (its run id changed)", now.Add(length)
		case m.role != "" && m.role != "master" && mi.role == "master":
			// A replica this Client saw, promoted (whatever its ids say
			// now: a promoted master frees its backlog, and takes a new id
			// without history, once it has no replica for a while).
			why, until = "was promoted since the last check (it was a replica)", now.Add(length)
		case m.runID != "" && m.replID != mi.replID && mi.continues():
			// Promoted (or its data replaced by a sync, then promoted). A
			// new id with no history (the backlog freed after its last
			// replica left) changes no data.
			why, until = "was promoted or had its data replaced since the last check (its replication id changed)", now.Add(length)
		case m.runID == "" && mi.uptime < length:
			// First contact: only a recent start can be known.
			why, until = fmt.Sprintf("started %v ago", mi.uptime), now.Add(length-mi.uptime)
		}
		if why != "" && until.After(m.fencedUntil) {
			m.fencedUntil = until
			m.restartWhy = why + fmt.Sprintf(": it may have lost lock keys that other clients still count on, so it does not count toward a quorum for %v (the restart fence)", length)
			news = true
		}
		m.runID, m.replID = mi.runID, mi.replID
	}
	if mi.runID != "" {
		m.role = mi.role
		m.cluster.Store(mi.clusterEnabled)
	} else if m.role != "" && m.role != "master" {
		// INFO failed (a BUSY script, say): it is still the replica it was.
		problems = append(problems, replicaProblem(m.role))
	}
	var fencing, warnings []string
	m.checkPermanent = false
	for _, p := range problems {
		switch {
		case p.fence:
			m.checkPermanent = true // like READONLY: retrying the round cannot fix it
			fencing = append(fencing, p.text+" (it does not count until a check finds it a master)")
		case f.strict:
			fencing = append(fencing, p.text+" (WithStrictMasters: it does not count until a check passes)")
		default:
			warnings = append(warnings, p.text)
		}
	}
	if warned := strings.Join(warnings, "; "); newConn || warned != m.warned {
		m.warned = warned
		if m.obs.on {
			for _, w := range warnings {
				m.obs.report(Event{Kind: EventMasterWarning, Master: m.addr, Err: fmt.Errorf("distlock: master %s %s", m.addr, w)})
			}
		}
	}
	checkWhy := strings.Join(fencing, "; ")
	if checkWhy != "" {
		m.recheckAt = now.Add(recheckEvery)
	}
	news = news || checkWhy != m.checkWhy
	m.checkWhy = checkWhy
	m.refence(now, news)
}

// refence sets the master's fence at now from the restart fence and the
// strict checks (m.mu held): the writer fails every command but releases
// while either holds. It arms the timer for the restart fence's end or the
// strict recheck, and reports a fence that began or changed (news) or ended.
func (m *master) refence(now time.Time, news bool) {
	if !now.Before(m.fencedUntil) {
		news = news || m.restartWhy != "" // its reasons change, if it stays fenced
		m.fencedUntil, m.restartWhy = time.Time{}, ""
	}
	m.fenceGen++
	if m.fenceTimer != nil {
		m.fenceTimer.Stop()
		m.fenceTimer = nil
	}
	var whys []string
	for _, w := range []string{m.restartWhy, m.checkWhy} {
		if w != "" {
			whys = append(whys, w)
		}
	}
	if len(whys) == 0 {
		if m.fenced.Swap(nil) != nil && m.obs.on {
			m.obs.report(Event{Kind: EventMasterUnfenced, Master: m.addr, Duration: now.Sub(m.fencedFrom)})
		}
		return
	}
	err := fmt.Errorf("%w: %s %s", ErrMasterFenced, m.addr, strings.Join(whys, "; "))
	if m.checkWhy != "" && m.checkPermanent {
		err = fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	ns := error(notSentError{err})
	if m.fenced.Swap(&ns) == nil {
		m.fencedFrom, news = now, true
	}
	at := m.fencedUntil
	if m.checkWhy != "" && !m.recheckAt.IsZero() && (at.IsZero() || m.recheckAt.Before(at)) {
		at = m.recheckAt
	}
	if !at.IsZero() {
		gen := m.fenceGen
		m.fenceTimer = m.policy.clock.AfterFunc(at.Sub(now), func() { m.fenceTimerFired(gen) })
	}
	if news && m.obs.on {
		var d time.Duration
		if !m.fencedUntil.IsZero() {
			d = m.fencedUntil.Sub(now)
		}
		m.obs.report(Event{Kind: EventMasterFenced, Master: m.addr, Duration: d, Err: err})
	}
}

// fenceTimerFired ends the restart fence when it is due and, once the
// recheck is due, has the writer check the master again before its next
// batch; a fence for a failed check holds until a check passes.
// gen: the fence the timer was armed for (a later one replaced it).
func (m *master) fenceTimerFired(gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || gen != m.fenceGen {
		return
	}
	now := m.policy.clock.Now()
	if m.checkWhy != "" && !m.recheckAt.IsZero() && !now.Before(m.recheckAt) {
		m.recheckAt = time.Time{}
		m.recheck.Store(true)
	}
	m.refence(now, false)
}

// dropFenced fails the commands of batch that must not reach a fenced
// master (all but releases) with its fence error, and returns the others.
func (m *master) dropFenced(batch []*command) []*command {
	p := m.fenced.Load()
	if p == nil {
		return batch
	}
	kept := batch[:0]
	for _, c := range batch {
		if c.resend {
			kept = append(kept, c)
			continue
		}
		m.fail(c, *p)
	}
	clear(batch[len(kept):])
	return kept
}
