package distlock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/gomodule/redigo/redis"
)

const (
	// queueSize bounds the commands waiting for one master's writer. A full
	// queue fails new commands at once instead of piling them up.
	queueSize = 1 << 16
	// maxBatch bounds the commands written before one flush.
	maxBatch = 1024
	// inflightBatches bounds the flushed batches awaiting replies.
	inflightBatches = 1024
	// maxDeferred bounds the releases kept for a master that is down.
	maxDeferred = 1 << 16
	// idleCheckAfter: the first batch after this long without one is
	// preceded by a check of the master's identity (see checkLive).
	idleCheckAfter = time.Second
	// Probes of a suspected master start at probeMin apart and back off to probeMax.
	probeMin = 20 * time.Millisecond
	probeMax = time.Second
)

var errQueueFull = errors.New("distlock: master request queue full")

// command is one request to one master, pipelined on its connection.
type command struct {
	script *lua      // sent with EVALSHA (args from script.evalsha); nil for a plain command
	name   string    // the plain command when script is nil
	args   []any     // the command's arguments
	idx    int       // the master's index, echoed in the reply
	tag    any       // the caller's, echoed in the reply
	reply  replySink // where the reply goes; nil: nobody waits

	// resend marks a command that may run late or twice (a release). If its
	// outcome is unknown because the master failed, it is kept and sent
	// again once the master answers probes. It is kept however long the
	// master stays down: a master that stalled (SIGSTOP, a stuck VM) runs the
	// commands in its buffers when it resumes, an acquire among them, and
	// only the release sent after it deletes the key that acquire sets.
	resend bool

	// A Redis Cluster's redirects (clusterroute.go): asking sends ASKING
	// before the command, on the same connection (the reply to an ASK);
	// redirects counts the MOVED and ASK replies followed.
	asking    bool
	redirects uint8
}

type reply struct {
	idx int
	tag any
	val any
	err error
}

// replySink receives replies. put is called by the pipeline's goroutines and
// by submit, so it must not block and must not call back into the pipeline.
type replySink interface {
	put(reply)
}

// replyChan is a sink for one round: a channel buffered for one reply per
// master, so put never blocks.
type replyChan chan reply

func (ch replyChan) put(r reply) { ch <- r }

// send writes c on conn; sharded: conn is to a Redis Cluster node, where
// a script that announces runs as its sharded twin (see lua.sharded).
func (c *command) send(conn redis.Conn, sharded bool) error {
	if c.asking {
		if err := conn.Send("ASKING"); err != nil {
			return err
		}
	}
	if sharded && c.script != nil && c.script.sharded != nil && len(c.args) > 0 {
		args := append([]any{c.script.sharded.hashArg}, c.args[1:]...)
		return conn.Send("EVALSHA", args...)
	}
	return conn.Send(c.cmdName(), c.args...)
}

// cmdName is the Redis command c sends.
func (c *command) cmdName() string {
	if c.script != nil {
		return "EVALSHA"
	}
	return c.name
}

// detached returns a copy of c to send again later: nobody waits for its
// reply, and its arguments are its own (c's may belong to a round that is
// recycled once c is answered).
func (c *command) detached() *command {
	cp := *c
	cp.reply = nil
	cp.asking, cp.redirects = false, 0 // sent again by slot, from the start
	cp.args = append([]any(nil), c.args...)
	return &cp
}

func (c *command) deliver(val any, err error) {
	if c.reply != nil {
		c.reply.put(reply{idx: c.idx, tag: c.tag, val: val, err: err})
	}
}

// master is the transport to one Redis master: a queue, a writer goroutine,
// and one pipelined connection with its reader goroutine.
type master struct {
	addr        string
	pool        Pool
	cfg         *clientConfig
	timeout     time.Duration
	dialTimeout time.Duration
	obs         *observer    // the Client's
	policy      *fencePolicy // the Client's restart fence and master checks

	// Counters for Client.Stats.
	flushes  atomic.Uint64         // batches written with one flush
	replies  atomic.Uint64         // replies received
	failures atomic.Uint64         // commands that got no usable answer
	lastErr  atomic.Pointer[error] // the last failure

	// scripts: the scripts were loaded on the current connection. Until
	// they are, acquire rounds run acquire.lua rather than plain SET NX
	// (see Mutex.acquire): a master that refuses scripts (an ACL without
	// them) must refuse the acquisition, not grant a lock that can be
	// neither renewed nor released.
	scripts atomic.Bool

	// The restart fence (masterfence.go). fenced is non-nil while the
	// master does not count: the writer fails every command but releases
	// with it. recheck: check the master again (INFO) before the next
	// batch.
	fenced      atomic.Pointer[error]
	recheck     atomic.Bool
	infoRefused atomic.Bool // the last INFO failed: idle checks would only fail again
	// cluster: the master is a Redis Cluster node (INFO), which refuses a
	// script call whose keys are in different slots (CROSSSLOT): the
	// watchdog batches its renewals per slot there.
	cluster atomic.Bool
	// connected: the writer has a connection, and the master is not
	// suspected down since it was made.
	connected atomic.Bool
	// router: the master is a Redis Cluster (or may be one) whose nodes
	// this Client can dial: the route of the seed master given to
	// NewClient, shared by its nodes' transports. nil for a master given as
	// a pool. Set before the writer starts.
	router *route

	queue   chan *command
	closing chan struct{}
	wg      sync.WaitGroup // the writer, the readers, the probe

	mu       sync.RWMutex // guards the fields below; submit holds it shared
	closed   bool
	down     error     // non-nil while suspected down
	notSent  error     // notSentError{down}, boxed once: what submit answers while down
	downAt   time.Time // when it was suspected
	deferred []*command
	// late: releases (resend commands) submitted after close began, such
	// as one the reader re-sends after NOSCRIPT while the writer drains;
	// close sends them on a connection of its own once the pipeline
	// stopped.
	late []*command
	// The identity learnt at the last check, and the fence
	// (masterfence.go).
	runID, replID  string
	role           string    // "master", "slave", or "" before the first check
	fencedUntil    time.Time // the end of the restart fence; zero: none
	restartWhy     string    // why the restart fence holds
	checkWhy       string    // the failed checks that fence it (a replica; WithStrictMasters)
	warned         string    // the problems last reported
	checkPermanent bool      // checkWhy is permanent (a replica): ErrPermanent
	recheckAt      time.Time // when to check a strictly fenced master again
	fencedFrom     time.Time // when the fence began
	fenceGen       uint64    // the fence's timer generation
	fenceTimer     *clock.Timer
}

func newMaster(addr string, pool Pool, cfg *clientConfig, obs *observer, policy *fencePolicy) *master {
	m := makeMaster(addr, pool, cfg, obs, policy)
	m.start()
	return m
}

// makeMaster returns a master that start sets going.
func makeMaster(addr string, pool Pool, cfg *clientConfig, obs *observer, policy *fencePolicy) *master {
	return &master{
		addr:        addr,
		pool:        pool,
		cfg:         cfg,
		timeout:     cfg.masterTimeout,
		dialTimeout: cfg.dialTimeout,
		obs:         obs,
		policy:      policy,
		queue:       make(chan *command, queueSize),
		closing:     make(chan struct{}),
	}
}

// start starts the master's writer.
func (m *master) start() {
	m.wg.Add(1)
	go m.writeLoop()
}

// submit queues c for the master, or for the node of a Redis Cluster that
// owns c's slot. It never blocks: when the master is closed, suspected
// down, or its queue is full, c fails at once.
func (m *master) submit(c *command) {
	if r := m.routing(); r != nil {
		r.submit(c)
		return
	}
	m.enqueue(c)
}

// routing returns the master's route once it routes by slot, else nil.
func (m *master) routing() *route {
	if r := m.router; r != nil && r.active.Load() {
		return r
	}
	return nil
}

// enqueue queues c for this master's own connection.
func (m *master) enqueue(c *command) {
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		if c.resend {
			m.keepLate(c)
		}
		c.deliver(nil, ErrClosed)
		return
	}
	if m.down != nil {
		notSent := m.notSent
		m.mu.RUnlock()
		m.fail(c, notSent)
		return
	}
	select {
	case m.queue <- c:
		m.mu.RUnlock()
	default:
		m.mu.RUnlock()
		c.deliver(nil, errQueueFull)
	}
}

// keepLate keeps a copy of c, submitted after close began, for close to
// send (see master.late).
func (m *master) keepLate(c *command) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.late) < maxDeferred {
		m.late = append(m.late, c.detached())
	}
}

// sendLate sends the late releases (see master.late) one by one on a
// connection of their own, each bounded by the master timeout, loading a
// script the server does not have; it gives up at the first failure of
// the connection.
func (m *master) sendLate() {
	m.mu.Lock()
	late := m.late
	m.late = nil
	m.mu.Unlock()
	if len(late) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.dialTimeout)
	defer cancel()
	conn, err := m.pool.GetContext(ctx)
	if err != nil {
		return
	}
	defer conn.Close()
	for _, c := range late {
		_, err := receiveOrDo(conn, m.timeout, c.cmdName(), c.args...)
		if err != nil && isNoScript(err) && c.script != nil {
			if err = c.script.Load(conn); err == nil {
				_, err = receiveOrDo(conn, m.timeout, c.cmdName(), c.args...)
			}
		}
		if err != nil && !isReplyError(err) {
			return // the connection failed
		}
	}
}

// fail answers c with err and, if c may be re-sent, keeps a copy to send
// when the master is back.
func (m *master) fail(c *command, err error) {
	m.failed(err)
	if r := m.routing(); c.resend && r != nil {
		// A node of a cluster: the release goes wherever its slot is when
		// it is sent again (see route).
		r.keep(c)
	} else if c.resend {
		m.mu.Lock()
		if !m.closed && m.down != nil && len(m.deferred) < maxDeferred {
			m.deferred = append(m.deferred, c.detached())
		}
		m.mu.Unlock()
	}
	c.deliver(nil, err)
}

// failed counts a command that got no usable answer, for Stats.
func (m *master) failed(err error) {
	m.failures.Add(1)
	if last := m.lastErr.Load(); last == nil || !sameErr(*last, err) { // a master down fails every command alike
		m.lastErr.Store(&err)
	}
}

// sameErr reports whether a and b are the same comparable error value
// (never panicking on an error type that cannot be compared).
func sameErr(a, b error) bool {
	ta := reflect.TypeOf(a)
	return ta != nil && ta == reflect.TypeOf(b) && ta.Comparable() && a == b
}

// markDown records that the master failed and starts the probe that
// re-admits it.
func (m *master) markDown(err error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	wasUp := m.down == nil
	m.scripts.Store(false) // until loaded on the next connection
	m.connected.Store(false)
	if m.router != nil && m != m.router.seed {
		m.down = fmt.Errorf("%w: cluster node %s: %w", ErrMasterDown, m.addr, classifyErr(err))
	} else {
		m.down = fmt.Errorf("%w: %w", ErrMasterDown, classifyErr(err))
	}
	if r := m.routing(); r != nil {
		r.refreshSoon() // its slots may move to a promoted replica
	}
	m.notSent = notSentError{m.down}
	if wasUp {
		m.downAt = time.Now()
		m.wg.Add(1)
		go m.probeLoop()
		if m.obs.on { // under mu: in order with the master's up event
			m.obs.report(Event{Kind: EventMasterDown, Master: m.addr, Err: m.down})
		}
	}
	m.mu.Unlock()
}

func (m *master) downErr() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.down
}

// probeLoop pings the master, backing off, until it answers; then it
// re-admits the master and re-sends the releases kept while it was down.
// Probes run on real time: they watch the network, not lock time.
func (m *master) probeLoop() {
	defer m.wg.Done()
	delay := probeMin
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-m.closing:
			return
		case <-t.C:
		}
		if m.ping() == nil {
			m.readmit()
			return
		}
		delay = min(2*delay, probeMax)
		t.Reset(delay)
	}
}

// readmit ends the master's suspicion and re-sends the releases kept while
// it was down.
func (m *master) readmit() {
	m.mu.Lock()
	if m.closed || m.down == nil { // closing, or re-admitted already
		m.mu.Unlock()
		return
	}
	m.down, m.notSent = nil, nil
	deferred := m.deferred
	m.deferred = nil
	if m.obs.on {
		m.obs.report(Event{Kind: EventMasterUp, Master: m.addr, Duration: time.Since(m.downAt)})
	}
	m.mu.Unlock()
	if r := m.routing(); r != nil {
		r.retryKept() // the releases kept while a node was down
	}
	// Not through submit: a full queue would drop them. The writer drains
	// the queue, so this waits at most for it to make room, or for Close.
	for _, c := range deferred {
		select {
		case m.queue <- c:
		case <-m.closing:
			return
		}
	}
}

func (m *master) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), m.dialTimeout)
	defer cancel()
	conn, err := m.pool.GetContext(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = receiveOrDo(conn, m.timeout, "PING")
	return err
}

// close stops the writer, its connection and the probe, waits for them, and
// fails whatever was still queued. A master suspected down that holds
// releases for re-sending gets one more chance first: if it answers a ping
// now, they are sent before the writer stops.
func (m *master) close() {
	if r := m.routing(); r != nil && r.seed == m {
		r.retryKept() // one more chance, on the nodes that are up
	}
	m.mu.RLock()
	retry := m.down != nil && len(m.deferred) > 0 && !m.closed
	m.mu.RUnlock()
	if retry && m.ping() == nil {
		m.readmit()
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.deferred = nil
	if m.fenceTimer != nil {
		m.fenceTimer.Stop()
	}
	m.mu.Unlock()
	close(m.closing)
	m.wg.Wait()
	for {
		select {
		case c := <-m.queue:
			if c.resend {
				m.keepLate(c)
			}
			c.deliver(nil, ErrClosed)
			continue
		default:
		}
		break
	}
	m.sendLate()
	if m.router != nil && m.router.seed == m {
		m.router.close() // its cluster's other nodes
	}
}

// writeLoop takes what is queued, writes it on the connection with one
// flush, and hands the batch to the connection's reader.
func (m *master) writeLoop() {
	defer m.wg.Done()
	var p *pipe
	defer func() {
		if p != nil {
			p.stop()
		}
	}()
	batch := make([]*command, 0, maxBatch)
	for {
		select {
		case c := <-m.queue:
			batch = append(batch[:0], c)
		case <-m.closing:
			// Send what was queued before Close (a release after a quorum
			// already confirmed, say); submit takes nothing new now.
			select {
			case c := <-m.queue:
				batch = append(batch[:0], c)
			default:
				return
			}
		}
		// Let the goroutines that are queueing run first, so that a burst
		// (a round's fan-out, the watchdog's due extensions) leaves in one
		// flush instead of a write per command.
		runtime.Gosched()
	fill:
		for len(batch) < maxBatch {
			select {
			case c := <-m.queue:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		if err := m.downErr(); err != nil {
			m.failAll(batch, notSentError{err})
			continue
		}
		if p != nil && p.isDead() {
			p.stop()
			p = nil
		}
		if p == nil {
			var err error
			if p, err = m.connect(); err != nil {
				m.markDown(err)
				m.failAll(batch, notSentError{cmp.Or(m.downErr(), err)})
				continue
			}
		}
		// On a live connection, check the master again when a reply said
		// its role changed, or a strict recheck is due, or after an idle
		// spell, before anything else reaches it.
		if m.recheck.Swap(false) || !m.infoRefused.Load() && time.Since(p.lastWrite) > idleCheckAfter {
			if err := m.checkLive(p); err != nil {
				m.markDown(err)
				m.failAll(batch, notSentError{cmp.Or(m.downErr(), err)}) // never written
				p.stop()
				p = nil
				continue
			}
		}
		if batch = m.dropFenced(batch); len(batch) == 0 {
			continue
		}
		// The batch goes to the reader, which gives the slice back for reuse.
		// On error the writer keeps it: batch still lists the same commands.
		if err := p.write(m, append(p.batchSlice(), batch...)); err != nil {
			m.markDown(err)
			m.failAll(batch, cmp.Or(m.downErr(), err))
			p.stop()
			p = nil
		}
	}
}

func (m *master) failAll(cmds []*command, err error) {
	if err == nil { // closed while failing: report the close
		err = ErrClosed
	}
	for _, c := range cmds {
		m.fail(c, err)
	}
}

func (m *master) connect() (*pipe, error) {
	ctx, cancel := context.WithTimeout(context.Background(), m.dialTimeout)
	defer cancel()
	conn, err := m.pool.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	if err := conn.Err(); err != nil {
		conn.Close()
		return nil, err
	}
	// Before any lock traffic: the restart fence and the master checks.
	m.recheck.Store(false)
	if err := m.checkMaster(conn); err != nil {
		conn.Close()
		return nil, err
	}
	p := &pipe{
		conn:      conn,
		lastWrite: time.Now(),
		sent:      make(chan []*command, inflightBatches),
		free:      make(chan []*command, inflightBatches),
		dead:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	p.needLoad.Store(true)
	m.scripts.Store(false)
	m.connected.Store(true)
	m.wg.Add(1)
	go p.readLoop(m)
	return p, nil
}

// pipe is one pipelined connection: the writer sends and flushes batches,
// the reader receives their replies in order.
type pipe struct {
	conn      redis.Conn
	sent      chan []*command       // flushed batches, in order, awaiting replies
	free      chan []*command       // batches the reader is done with, for reuse
	dead      chan struct{}         // closed by the reader when the connection failed
	done      chan struct{}         // closed when the reader exits
	lastWrite time.Time             // when the writer last wrote (or connected); only the writer uses it
	needLoad  atomic.Bool           // send SCRIPT LOAD before the next batch
	loadErr   atomic.Pointer[error] // why the last SCRIPT LOAD failed; nil when it worked
}

// batchSlice returns an empty slice for a batch, reused when one is free.
func (p *pipe) batchSlice() []*command {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]*command, 0, 16)
	}
}

func (p *pipe) isDead() bool {
	select {
	case <-p.dead:
		return true
	default:
		return false
	}
}

// write sends the batch with one flush and hands it to the reader. On error
// nothing was handed over and the caller fails the batch.
func (p *pipe) write(m *master, batch []*command) error {
	// The sharded twins are loaded on every cluster node, and used once
	// the Client routes by slot, when it subscribes by slot too (see
	// shardSubs); until then announcements go by PUBLISH, which the seed's
	// plain subscriber hears.
	cluster := m.cluster.Load()
	sharded := cluster && m.routing() != nil
	if p.needLoad.Swap(false) {
		// Pipelined like any command (a synchronous SCRIPT LOAD would read
		// replies that belong to the reader); their replies are discarded.
		srcs := scriptSources
		if cluster {
			srcs = append(slices.Clip(srcs), shardedSources...)
		}
		loads := make([]*command, 0, len(srcs)+len(batch))
		for i, src := range srcs {
			loads = append(loads, &command{name: "SCRIPT", args: []any{"LOAD", src}, reply: loadSink{p, m, i == 0, i == len(srcs)-1}})
		}
		batch = append(loads, batch...)
	}
	for _, c := range batch {
		if err := c.send(p.conn, sharded); err != nil {
			return err
		}
	}
	if err := p.conn.Flush(); err != nil {
		return err
	}
	p.lastWrite = time.Now()
	m.flushes.Add(1)
	select {
	case p.sent <- batch:
		return nil
	case <-p.dead:
		return errors.New("connection failed")
	}
}

// stop ends the reader and closes the connection. The reader finishes the
// batches already handed to it first (each reply bounded by the timeout).
func (p *pipe) stop() {
	close(p.sent)
	<-p.done
	p.conn.Close()
}

func (p *pipe) readLoop(m *master) {
	defer m.wg.Done()
	defer close(p.done)
	var broken error
	for batch := range p.sent {
		answered := 0
		for _, c := range batch {
			if broken != nil {
				m.fail(c, broken)
				continue
			}
			v, err := receiveOrDo(p.conn, m.timeout, "")
			if c.asking && (err == nil || isReplyError(err)) { // that was ASKING's reply
				v, err = receiveOrDo(p.conn, m.timeout, "")
			}
			if err != nil && m.router != nil && m.router.redirect(m, c, err) {
				answered++
				continue // sent on to the node that owns its slot
			}
			if err != nil && m.router != nil && isReply(err, "TRYAGAIN") && m.router.tryAgain(c) {
				answered++
				continue // sent again shortly: its keys are being moved
			}
			if err == nil || isReplyError(err) {
				answered++
			}
			if err != nil && !isReplyError(err) {
				// The connection failed (timeout, reset, EOF): every reply
				// still expected on it is lost.
				broken = err
				close(p.dead)
				m.markDown(err)
				if m.router != nil && m != m.router.seed {
					broken = cmp.Or(m.downErr(), err) // naming the node
				}
				m.fail(c, broken)
				continue
			}
			if err != nil && errors.Is(classifyErr(err), ErrPermanent) {
				m.failed(err) // answered, but with a failure retrying cannot fix
			}
			if err != nil && isRoleChange(err) {
				m.recheck.Store(true) // its identity may have changed: check before the next batch
			}
			if err != nil && isNoScript(err) {
				// The scripts were flushed from the server. Reload them
				// before the next batch. A command that did not run may be
				// sent again only if running it late is harmless (a release);
				// the others fail, and their round's retry takes over: an
				// acquire sent again here could land after its own release.
				// If loading failed (an ACL without SCRIPT LOAD), NOSCRIPT
				// will not go away: the command fails with the load's error
				// (permanent), and nothing is sent again.
				p.needLoad.Store(true)
				if le := p.loadErr.Load(); le != nil {
					c.deliver(nil, fmt.Errorf("the scripts cannot be loaded: %w", *le))
					continue
				}
				if c.resend {
					m.submit(c)
					continue
				}
			}
			c.deliver(v, err)
		}
		m.replies.Add(uint64(answered))
		clear(batch)
		select {
		case p.free <- batch[:0]:
		default:
		}
	}
}

// loadSink records whether the SCRIPT LOADs sent on p together worked: the
// first one's reply clears the last failure, any failure is kept, and the
// last one's tells the master whether its scripts are loaded. Their replies
// come before those of the commands sent after them, on the same reader.
type loadSink struct {
	p           *pipe
	m           *master
	first, last bool
}

func (s loadSink) put(r reply) {
	if s.first {
		s.p.loadErr.Store(nil)
	}
	if r.err != nil {
		s.p.loadErr.Store(&r.err)
	}
	if s.last {
		s.m.scripts.Store(s.p.loadErr.Load() == nil)
	}
}

// isReplyError reports whether err is an error reply from the server (the
// connection is fine), as opposed to a failure of the connection.
func isReplyError(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// isReply reports whether err is an error reply that starts with prefix
// (its code, such as "NOSCRIPT").
func isReply(err error, prefix string) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(string(re), prefix)
}

// receiveOrDo receives one reply (cmd == "") or runs cmd, bounded by timeout
// when the connection supports it.
func receiveOrDo(conn redis.Conn, timeout time.Duration, cmd string, args ...any) (any, error) {
	if cwt, ok := conn.(redis.ConnWithTimeout); ok {
		if cmd == "" {
			return cwt.ReceiveWithTimeout(timeout)
		}
		return cwt.DoWithTimeout(timeout, cmd, args...)
	}
	if cmd == "" {
		return conn.Receive()
	}
	return conn.Do(cmd, args...)
}
