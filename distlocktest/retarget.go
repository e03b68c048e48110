package distlocktest

// SetTarget points the proxy at another server, as a failover that moves a
// master's address to its promoted replica does: new connections go to
// addr, and every open connection is closed at once, so that the client
// reconnects (to addr) instead of talking to the old server. The faults set
// (latency, blackhole, dropped replies) stay as they are. A connection that
// the proxy was setting up while SetTarget ran may still reach the old
// server: for a failover, kill the old server first, as a real one is dead.
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
	p.ResetConns()
}

// currentTarget returns the address new connections go to.
func (p *Proxy) currentTarget() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target
}
