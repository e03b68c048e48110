//go:build linux

package history

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distlock/distlock/distlocktest"
)

const masters = 5

// params shape one run.
type params struct {
	clients       int
	ttl           time.Duration
	writes        int           // per section
	gap           time.Duration // before each write
	idle          time.Duration // between sections
	masterTimeout time.Duration
	lockWait      time.Duration
	stall         int // one section in stall stalls past its TTL before a write (0: none)
	masterStreams int // concurrent streams of master faults
	fenceOff      bool
	replicas      []int // masters that get a replica behind their proxy
	// redisCluster: one master, a Redis Cluster of 3 nodes that the
	// clients reach directly (given by one node), instead of 5 masters
	// behind proxies.
	redisCluster bool
}

// cluster is the parent's side of a run: the masters, a proxy per client
// and master, the fenced resource, the client processes and what they
// reported.
type cluster struct {
	t    *testing.T
	p    params
	name string

	// servers[i] is master i's server; spare[i] its replica, or nil. While
	// clients run, only a master fault stream holding busy[i] uses them.
	servers []*distlocktest.Server
	rc      *distlocktest.Cluster // with redisCluster: its nodes are servers
	busy    [masters]sync.Mutex
	spare   []*distlocktest.Server
	proxies [][]*distlocktest.Proxy // [client][master]
	res     *resource
	clients []*child

	mu     sync.Mutex
	events []event
	faults []fault
	bad    []string // lines a client printed that are not events
}

// child is one client process.
type child struct {
	id     int
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr lockedBuffer
	read   chan struct{} // closed when its stdout reached EOF
	exited chan struct{} // closed when it has been waited for
	err    error         // Wait's error, after exited

	mu      sync.Mutex
	stopped bool // SIGSTOP sent, no SIGCONT yet
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newCluster starts the masters, replicas, proxies and resource; all are
// stopped in t.Cleanup as well as by teardown.
func newCluster(t *testing.T, p params) *cluster {
	t.Helper()
	c := &cluster{t: t, p: p, name: "history:" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	if p.redisCluster {
		c.rc = distlocktest.NewCluster(t, 3)
		c.servers = c.rc.Nodes()
	} else {
		c.servers = distlocktest.NewServers(t, masters)
	}
	c.spare = make([]*distlocktest.Server, len(c.servers))
	for _, i := range p.replicas {
		c.spare[i] = distlocktest.NewReplica(t, c.servers[i])
	}
	c.proxies = make([][]*distlocktest.Proxy, p.clients)
	for k := range p.clients {
		if p.redisCluster {
			continue
		}
		c.proxies[k] = make([]*distlocktest.Proxy, masters)
		for i, s := range c.servers {
			c.proxies[k][i] = distlocktest.NewProxy(t, s.Addr())
		}
	}
	res, err := startResource()
	if err != nil {
		t.Fatal(err)
	}
	c.res = res
	t.Cleanup(res.close)
	return c
}

// startClients starts the client processes; t.Cleanup kills any left.
func (c *cluster) startClients() {
	t := c.t
	t.Helper()
	for k := range c.p.clients {
		addrs := make([]string, len(c.proxies[k]))
		for i, px := range c.proxies[k] {
			addrs[i] = px.Addr()
		}
		if c.rc != nil {
			addrs = c.rc.Addrs()[:1] // one master: the cluster, by one node
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestHistoryClientProcess$", "-test.timeout=30m")
		cmd.Env = append(os.Environ(),
			envChild+"="+strconv.Itoa(k),
			envAddrs+"="+strings.Join(addrs, ","),
			envResource+"="+c.res.addr(),
			envName+"="+c.name,
			envTTL+"="+c.p.ttl.String(),
			envWrites+"="+strconv.Itoa(c.p.writes),
			envGap+"="+c.p.gap.String(),
			envIdle+"="+c.p.idle.String(),
			envTimeout+"="+c.p.masterTimeout.String(),
			envLockLimit+"="+c.p.lockWait.String(),
			envStall+"="+strconv.Itoa(c.p.stall),
		)
		if c.p.fenceOff {
			cmd.Env = append(cmd.Env, envFenceOff+"=1")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphan if the parent dies
		ch := &child{id: k, cmd: cmd, read: make(chan struct{}), exited: make(chan struct{})}
		cmd.Stderr = &ch.stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if ch.stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c.clients = append(c.clients, ch)
		t.Cleanup(func() { ch.kill() })
		go c.readEvents(ch, stdout)
		go func() {
			<-ch.read // Wait closes stdout: read it all first
			ch.err = cmd.Wait()
			close(ch.exited)
		}()
	}
}

func (c *cluster) readEvents(ch *child, stdout io.Reader) {
	defer close(ch.read)
	in := bufio.NewScanner(stdout)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	for in.Scan() {
		line := in.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			if s := string(line); s != "PASS" && s != "" {
				c.mu.Lock()
				c.bad = append(c.bad, fmt.Sprintf("client %d: %s", ch.id, s))
				c.mu.Unlock()
			}
			continue
		}
		e.C = ch.id
		c.mu.Lock()
		c.events = append(c.events, e)
		c.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, stdout)
}

// pause stops the client process with SIGSTOP; resume continues it.
func (ch *child) pause() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.stopped = true
	return ch.cmd.Process.Signal(syscall.SIGSTOP)
}

func (ch *child) resume() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.stopped = false
	return ch.cmd.Process.Signal(syscall.SIGCONT)
}

// kill ends the process if it still runs, and waits for it (bounded).
func (ch *child) kill() {
	select {
	case <-ch.exited:
		return
	default:
	}
	_ = ch.cmd.Process.Kill()
	_ = ch.resume()
	select {
	case <-ch.exited:
	case <-time.After(10 * time.Second):
	}
}

// stopClients asks every client to stop (closes its stdin) and waits for it
// to close its Client and exit, at most wait; those still running are
// killed and reported.
func (c *cluster) stopClients(wait time.Duration) []string {
	for _, ch := range c.clients {
		_ = ch.resume()
		ch.stdin.Close()
	}
	var problems []string
	deadline := time.After(wait)
	for _, ch := range c.clients {
		select {
		case <-ch.exited:
			if ch.err != nil {
				problems = append(problems, fmt.Sprintf("client %d: %v\n%s", ch.id, ch.err, ch.stderr.String()))
			}
		case <-deadline:
			problems = append(problems, fmt.Sprintf("client %d did not exit within %v: killed\n%s", ch.id, wait, ch.stderr.String()))
			ch.kill()
		}
	}
	return problems
}

// snapshot returns a copy of the events so far.
func (c *cluster) snapshot() []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event(nil), c.events...)
}

// leftKeys lists the keys on every master other than fencing counters, those
// for which failedOver (the master's index, the key's PTTL) is true apart.
func (c *cluster) leftKeys(failedOver func(i int, pttl int64) bool) (left, afterFailover []string) {
	for i, s := range c.servers {
		v, err := s.Do("KEYS", "*")
		if err != nil {
			left = append(left, fmt.Sprintf("master %d (%s): KEYS: %v", i, s.Addr(), err))
			continue
		}
		keys, _ := v.([]any)
		for _, k := range keys {
			name := string(k.([]byte))
			if strings.HasPrefix(name, "__distlock:fence:") {
				continue
			}
			ttl, _ := s.Do("PTTL", name)
			line := fmt.Sprintf("master %d (%s): key %q left, PTTL %v ms", i, s.Addr(), name, ttl)
			if pttl, ok := ttl.(int64); ok && failedOver(i, pttl) {
				afterFailover = append(afterFailover, line)
				continue
			}
			left = append(left, line)
		}
	}
	return left, afterFailover
}

// teardown stops the proxies, the resource and the servers at once (the
// cleanups do it again, harmlessly), so that a goroutine check can follow.
func (c *cluster) teardown() {
	for _, ch := range c.clients {
		ch.kill()
		select {
		case <-ch.read:
		case <-time.After(10 * time.Second):
			c.t.Errorf("client %d: its output did not end within 10s of its kill", ch.id)
		}
	}
	for _, row := range c.proxies {
		for _, px := range row {
			px.Close()
		}
	}
	c.res.close()
	for i := range c.servers {
		c.servers[i].Close()
		if c.spare[i] != nil {
			c.spare[i].Close()
		}
	}
}

// holding returns the clients that have acquired and not yet unlocked or
// been told of a loss, in the events so far.
func (c *cluster) holding() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	open := map[[2]int]bool{}
	for _, e := range c.events {
		k := [2]int{e.C, e.Sec}
		switch e.Ev {
		case evAcq:
			open[k] = true
		case evUnlock, evLoss, evTokFail:
			delete(open, k)
		}
	}
	var ids []int
	for k := range open {
		ids = append(ids, k[0])
	}
	sort.Ints(ids)
	return ids
}
