package distlock

// Stats is a snapshot of a Client's state, for dashboards and health
// checks (Client.Stats). Its fields marshal to JSON as they are, so it can
// be published with expvar.
type Stats struct {
	Masters []MasterStats `json:"masters"` // in the Client's order
	// Leases is the number of leases the watchdog keeps: held, not yet
	// unlocked or lost.
	Leases int `json:"leases"`
	// Waiting is the number of Lock calls (of any kind) that found the lock
	// busy or failed a round and have not returned yet.
	Waiting int `json:"waiting"`
	// Quorum is the number of masters that must agree; Up is the number of
	// masters neither suspected down nor fenced. Up < Quorum: no lock can be taken or
	// renewed now.
	Quorum int `json:"quorum"`
	Up     int `json:"up"`
	// EventsDropped counts the events not delivered to the observer and
	// logger because 65 536 were already waiting for them (see WithObserver).
	EventsDropped uint64 `json:"events_dropped"`
}

// MasterStats is the state of one master's connection.
type MasterStats struct {
	// Addr is the master's address without its password, or "pool[i]".
	Addr string `json:"addr"`
	// State is "up", "down" while the master is suspected down (its
	// requests fail at once until a probe gets an answer), or "fenced" while
	// it does not count toward a quorum (see WithRestartFence and
	// WithStrictMasters).
	State string `json:"state"`
	// Reason is why the master is suspected down or fenced; "" while it is
	// up.
	Reason string `json:"reason,omitempty"`
	// RoundTrips is the number of batches written to the master, each with
	// one flush; Replies the number of replies received; Failures the number
	// of requests that got no usable answer (not sent because the master was
	// down, timed out, connection lost, or answered with an error that
	// retrying cannot fix, such as a wrong password). All three count since
	// NewClient. LastError is the last failure's text ("" if none): it stays
	// after the master recovers.
	RoundTrips uint64 `json:"round_trips"`
	Replies    uint64 `json:"replies"`
	Failures   uint64 `json:"failures"`
	LastError  string `json:"last_error,omitempty"`
	// Queued is the number of requests waiting to be written.
	Queued int `json:"queued"`
	// Deferred is the number of releases kept for the master while it is
	// down, sent when it answers again.
	Deferred int `json:"deferred"`
	// Nodes are the other nodes of a master that is a Redis Cluster of
	// several nodes, by address, each with the state and counters of its
	// own connection; the fields above are those of the node given to
	// NewClient. A node down or fenced fails the names in its slots only:
	// State above does not show it.
	Nodes []MasterStats `json:"nodes,omitempty"`
}

// Stats returns a snapshot of the Client's masters, leases and waiters. It
// does not touch the network, and may be called at any time, also after
// Close (then every master is down with the reason ErrClosed).
func (c *Client) Stats() Stats {
	s := Stats{Masters: make([]MasterStats, len(c.masters)), Quorum: c.quorum, Waiting: int(c.waiting.Load())}
	for i, m := range c.masters {
		ms, up := m.stats()
		if r := m.routing(); r != nil {
			ms.Nodes = r.nodeStats()
		}
		s.Masters[i] = ms
		if up {
			s.Up++
		}
	}
	s.Leases = c.renewer.size()
	s.EventsDropped = c.obs.dropped.Load()
	return s
}

// stats returns the master's own stats (its transport's), and whether it
// counts now (neither down nor fenced).
func (m *master) stats() (ms MasterStats, up bool) {
	ms.Addr = m.addr
	ms.RoundTrips, ms.Replies, ms.Failures = m.flushes.Load(), m.replies.Load(), m.failures.Load()
	ms.Queued = len(m.queue)
	if e := m.lastErr.Load(); e != nil {
		ms.LastError = (*e).Error()
	}
	fenced := m.fenced.Load()
	m.mu.RLock()
	down, closed := m.down, m.closed
	ms.Deferred = len(m.deferred)
	m.mu.RUnlock()
	switch {
	case closed:
		ms.State, ms.Reason = "down", ErrClosed.Error()
	case down != nil:
		ms.State, ms.Reason = "down", down.Error()
	case fenced != nil:
		ms.State, ms.Reason = "fenced", (*fenced).Error()
	default:
		ms.State = "up"
		up = true
	}
	return ms, up
}
