package distlocktest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections from its own loopback address to a target
// server and injects faults on demand. Its methods are safe for concurrent
// use, and a change applies at once to open connections.
type Proxy struct {
	target string // guarded by mu (SetTarget)
	ln     net.Listener
	wg     sync.WaitGroup

	mu          sync.Mutex
	latency     time.Duration
	blackhole   bool
	dropReplies bool
	conns       map[net.Conn]struct{}
	lossy       map[net.Conn]bool // connections that lost data to a fault
	closed      bool
}

// StartProxy listens on a free loopback port and forwards to target.
func StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, conns: make(map[net.Conn]struct{}), lossy: make(map[net.Conn]bool)}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// NewProxy starts a Proxy for t and closes it in t.Cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := StartProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Addr returns the proxy's "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetLatency delays every chunk of data in both directions by d (0: none).
func (p *Proxy) SetLatency(d time.Duration) { p.set(func() { p.latency = d }) }

// SetBlackhole makes the proxy swallow all data in both directions while on:
// connections stay open, nothing arrives. Swallowed data is lost; when the
// blackhole is turned off, the connections that lost data are reset, as TCP
// never resumes a stream with bytes missing (a client would otherwise read
// replies out of step with its requests).
func (p *Proxy) SetBlackhole(on bool) {
	p.set(func() {
		p.blackhole = on
		p.resetLossy(on)
	})
}

// SetDropReplies makes the proxy forward requests to the server but swallow
// its replies while on: commands run, the client never hears of it. Turning
// it off resets the connections that lost replies (see SetBlackhole).
func (p *Proxy) SetDropReplies(on bool) {
	p.set(func() {
		p.dropReplies = on
		p.resetLossy(on)
	})
}

// resetLossy closes the connections that lost data, unless a fault is still
// on. mu is held.
func (p *Proxy) resetLossy(on bool) {
	if on || p.blackhole || p.dropReplies {
		return
	}
	for c := range p.lossy {
		c.Close()
	}
	clear(p.lossy)
}

// ResetConns closes every open connection through the proxy.
func (p *Proxy) ResetConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Close stops accepting, closes every connection and waits for the proxy's
// goroutines to exit.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.ResetConns()
	p.wg.Wait()
	return err
}

func (p *Proxy) set(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
	delete(p.lossy, c)
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		// The target is read under mu: SetTarget may move it.
		server, err := net.DialTimeout("tcp", p.currentTarget(), time.Second)
		if err != nil {
			client.Close()
			continue
		}
		if !p.track(client) || !p.track(server) {
			client.Close()
			server.Close()
			continue
		}
		p.wg.Add(2)
		go p.pump(server, client, false)
		go p.pump(client, server, true)
	}
}

// pump copies src to dst, applying the faults; replies says whether this is
// the server-to-client direction. When either side closes, both are closed.
func (p *Proxy) pump(dst, src net.Conn, replies bool) {
	defer p.wg.Done()
	defer p.untrack(dst)
	defer p.untrack(src)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			latency, drop := p.latency, p.blackhole || (replies && p.dropReplies)
			if drop {
				p.lossy[src], p.lossy[dst] = true, true
			}
			p.mu.Unlock()
			if latency > 0 {
				time.Sleep(latency)
			}
			if !drop {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}
