package distlock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/gomodule/redigo/redis"
)

// ErrMasterFenced matches the failure of a request that was not sent because
// its master is fenced: it restarted or was promoted too recently to count
// toward a quorum (see WithRestartFence), or, with WithStrictMasters, it
// failed a check. Holders and waiters see it as unavailable, as a master
// that is down. Releases are still sent to it.
var ErrMasterFenced = errors.New("distlock: master fenced")

// recheckEvery is how long a master refused by WithStrictMasters stays
// fenced before a new connection checks it again (a variable for tests).
var recheckEvery = 5 * time.Second

// fencePolicy is the Client's restart fence and master checks, shared by its
// masters.
type fencePolicy struct {
	off     bool          // WithoutRestartFence
	strict  bool          // WithStrictMasters
	least   time.Duration // WithRestartFence, or DefaultTTL plus its drift
	longest atomic.Int64  // the longest TTL plus drift of the Client's locks
	clock   clock.Clock
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
// connection.
type masterInfo struct {
	runID           string // changes on every start of the server process
	replID          string // the replication id: new on a start without data or a promotion
	role            string // "master" or "slave"
	uptime          time.Duration
	connectedSlaves int
	maxmemory       int64
	maxmemoryPolicy string
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
		}
	}
	if mi.runID == "" || mi.role == "" {
		return masterInfo{}, errors.New("INFO gave no run_id or role")
	}
	return mi, nil
}

// problems lists what makes the master unfit to hold locks safely.
func (mi masterInfo) problems() []string {
	var p []string
	if mi.role != "master" {
		p = append(p, fmt.Sprintf("is a replica (role %s): it refuses writes, and a lock key written to its master can be lost in a failover", mi.role))
	}
	if mi.connectedSlaves > 0 {
		p = append(p, fmt.Sprintf("has %d replica(s): replication is asynchronous, so a failover to one can lose lock keys", mi.connectedSlaves))
	}
	if mi.maxmemory > 0 && mi.maxmemoryPolicy != "noeviction" && mi.maxmemoryPolicy != "" {
		p = append(p, fmt.Sprintf("maxmemory-policy %s with maxmemory %d can evict lock keys (they carry a TTL); use noeviction", mi.maxmemoryPolicy, mi.maxmemory))
	}
	return p
}

// checkMaster runs INFO on a new connection, before any lock traffic, and
// applies the restart fence and the master checks. It fails only when the
// connection fails; a master that refuses INFO is reported (and fenced by
// WithStrictMasters).
func (m *master) checkMaster(conn redis.Conn) error {
	v, err := redis.Bytes(receiveOrDo(conn, m.timeout, "INFO"))
	if err != nil && !isReplyError(err) && !errors.Is(err, redis.ErrNil) {
		return err
	}
	var mi masterInfo
	if err == nil {
		mi, err = parseInfo(v)
	}
	if err != nil {
		m.learn(masterInfo{}, []string{fmt.Sprintf("cannot be checked: INFO failed (%v); the restart fence needs it: allow the command INFO to the ACL user", err)})
		return nil
	}
	m.learn(mi, mi.problems())
	return nil
}

// learn applies what a new connection told of the master: it starts the
// restart fence when the master's identity changed since the last
// connection or it started less than the fence length ago, and reports its
// problems or, when strict, fences it for them until a connection finds none.
func (m *master) learn(mi masterInfo, problems []string) {
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
			why, until = "restarted or was replaced since the last connection (its run id changed)", now.Add(length)
		case m.runID != "" && m.replID != mi.replID:
			why, until = "was promoted or had its data replaced since the last connection (its replication id changed)", now.Add(length)
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
	strictWhy := ""
	if f.strict && len(problems) > 0 {
		strictWhy = strings.Join(problems, "; ") + " (WithStrictMasters: it does not count until a new connection passes the check)"
		m.recheckAt = now.Add(recheckEvery)
	} else if m.obs.on {
		for _, p := range problems {
			m.obs.report(Event{Kind: EventMasterWarning, Master: m.addr, Err: fmt.Errorf("distlock: master %s %s", m.addr, p)})
		}
	}
	news = news || strictWhy != m.strictWhy
	m.strictWhy = strictWhy
	m.refence(now, news)
}

// refence sets the master's fence at now from the restart fence and the
// strict checks (m.mu held): the writer fails every command but releases
// while either holds. It arms the timer for the restart fence's end or the
// strict recheck, and reports a fence that began or changed (news) or ended.
func (m *master) refence(now time.Time, news bool) {
	if !now.Before(m.fencedUntil) {
		m.fencedUntil, m.restartWhy = time.Time{}, ""
	}
	m.fenceGen++
	if m.fenceTimer != nil {
		m.fenceTimer.Stop()
		m.fenceTimer = nil
	}
	var whys []string
	for _, w := range []string{m.restartWhy, m.strictWhy} {
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
	ns := error(notSentError{err})
	if m.fenced.Swap(&ns) == nil {
		m.fencedFrom, news = now, true
	}
	at := m.fencedUntil
	if m.strictWhy != "" && !m.recheckAt.IsZero() && (at.IsZero() || m.recheckAt.Before(at)) {
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

// fenceTimerFired ends the restart fence when it is due and, once the strict
// recheck is due, has the writer check the master again on a new connection
// before its next batch; the strict fence holds until that check passes.
// gen: the fence the timer was armed for (a later one replaced it).
func (m *master) fenceTimerFired(gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || gen != m.fenceGen {
		return
	}
	now := m.policy.clock.Now()
	if m.strictWhy != "" && !m.recheckAt.IsZero() && !now.Before(m.recheckAt) {
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
