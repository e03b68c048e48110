//go:build linux

package history

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distlock/distlock"
)

// The environment of a client process. envChild set means: run as a client.
const (
	envChild     = "DISTLOCK_HISTORY_CLIENT" // the client's id
	envAddrs     = "DISTLOCK_HISTORY_ADDRS"  // comma-separated master addresses (its proxies)
	envResource  = "DISTLOCK_HISTORY_RESOURCE"
	envName      = "DISTLOCK_HISTORY_NAME"
	envTTL       = "DISTLOCK_HISTORY_TTL"
	envWrites    = "DISTLOCK_HISTORY_WRITES" // writes per critical section
	envGap       = "DISTLOCK_HISTORY_GAP"    // pause before each write
	envIdle      = "DISTLOCK_HISTORY_IDLE"   // pause between sections
	envTimeout   = "DISTLOCK_HISTORY_MASTER_TIMEOUT"
	envFenceOff  = "DISTLOCK_HISTORY_FENCE_OFF" // "1": distlock.WithoutRestartFence
	envLockLimit = "DISTLOCK_HISTORY_LOCK_WAIT" // bound of one Lock call
	envStall     = "DISTLOCK_HISTORY_STALL"     // one section in N stalls past its TTL between a check and its write (0: none)
)

// fenceOption returns the client option for the restart fence: off
// (distlock.WithoutRestartFence), or on with the fence lasting the lock's
// TTL plus drift (distlock.WithRestartFence(0): the default's floor is
// DefaultTTL, far longer than the TTLs here).
func fenceOption(off bool) distlock.ClientOption {
	if off {
		return distlock.WithoutRestartFence()
	}
	return distlock.WithRestartFence(0)
}

// event is one line a client reports. Times are wall-clock Unix ns.
type event struct {
	C     int    `json:"c"`               // client id
	Ev    string `json:"ev"`              // see the ev* constants
	T     int64  `json:"t"`               // when
	Sec   int    `json:"sec"`             // the client's section number (from 1)
	Tok   uint64 `json:"tok,omitempty"`   // token, write, wres
	Until int64  `json:"until,omitempty"` // the lease's Until as wall time, at T
	OK    bool   `json:"ok,omitempty"`    // wres: accepted
	Err   string `json:"err,omitempty"`
}

const (
	evAcq      = "acq"      // Lock returned a lease
	evToken    = "token"    // Token returned Tok
	evTokFail  = "tokfail"  // Token failed: the section writes nothing
	evWrite    = "write"    // about to write with Tok; the lease held until Until
	evWres     = "wres"     // the resource's answer (OK), or Err when unknown
	evLoss     = "loss"     // the holder was told the lease is lost (Done closed, Err set)
	evUnlock   = "unlock"   // about to call Unlock: the section ends here
	evLockFail = "lockfail" // Lock failed
	evClosed   = "closed"   // Client.Close returned
	evStall    = "stall"    // the holder stalls (a GC pause) between its check and its write
)

// TestHistoryClientProcess is one client of the history tests, run in a
// process of its own by the parent test (see startClient); it returns at
// once when not started as one. It locks, takes the token, writes to the
// fenced resource and unlocks in a loop until its stdin closes, reporting
// every step as a JSON line on stdout, then closes its Client.
func TestHistoryClientProcess(t *testing.T) {
	if os.Getenv(envChild) == "" {
		return
	}
	if err := runClient(); err != nil {
		t.Fatal(err)
	}
}

type clientConfig struct {
	id       int
	addrs    []string
	resource string
	name     string
	ttl      time.Duration
	writes   int
	gap      time.Duration
	idle     time.Duration
	timeout  time.Duration
	lockWait time.Duration
	stall    int
	fenceOff bool
}

func clientFromEnv() (clientConfig, error) {
	var c clientConfig
	var errs []error
	num := func(key string) int {
		n, err := strconv.Atoi(os.Getenv(key))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
		return n
	}
	dur := func(key string) time.Duration {
		d, err := time.ParseDuration(os.Getenv(key))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
		return d
	}
	c.id = num(envChild)
	c.addrs = strings.Split(os.Getenv(envAddrs), ",")
	c.resource = os.Getenv(envResource)
	c.name = os.Getenv(envName)
	c.ttl = dur(envTTL)
	c.writes = num(envWrites)
	c.gap = dur(envGap)
	c.idle = dur(envIdle)
	c.timeout = dur(envTimeout)
	c.lockWait = dur(envLockLimit)
	c.stall = num(envStall)
	c.fenceOff = os.Getenv(envFenceOff) == "1"
	return c, errors.Join(errs...)
}

// reporter writes events as JSON lines, one write per line.
type reporter struct {
	mu  sync.Mutex
	out io.Writer
	id  int
}

func (r *reporter) emit(e event) {
	e.C = r.id
	if e.T == 0 {
		e.T = time.Now().UnixNano()
	}
	b, _ := json.Marshal(e)
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = r.out.Write(append(b, '\n'))
}

// wallUntil converts the lease's Until (monotonic, the client's clock) to
// wall-clock Unix ns.
func wallUntil(l *distlock.Lease) (now, until int64) {
	n := time.Now()
	return n.UnixNano(), n.Add(l.Until().Sub(n)).UnixNano()
}

func runClient() error {
	cfg, err := clientFromEnv()
	if err != nil {
		return err
	}
	opts := []distlock.ClientOption{distlock.WithMasterTimeout(cfg.timeout), distlock.WithDialTimeout(cfg.timeout)}
	opts = append(opts, fenceOption(cfg.fenceOff))
	c, err := distlock.NewClient(cfg.addrs, opts...)
	if err != nil {
		return err
	}
	m, err := c.NewMutex(cfg.name, distlock.WithTTL(cfg.ttl))
	if err != nil {
		c.Close()
		return err
	}
	rep := &reporter{out: os.Stdout, id: cfg.id}
	res := &fencedConn{addr: cfg.resource, id: cfg.id}
	defer res.close()

	// The parent closes stdin to stop the loop.
	stop, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(cfg.id)))
	for sec := 1; stop.Err() == nil; sec++ {
		stallAt := -1
		if cfg.stall > 0 && rng.IntN(cfg.stall) == 0 {
			stallAt = rng.IntN(cfg.writes)
		}
		runSection(stop, cfg, m, rep, res, sec, stallAt)
		select {
		case <-stop.Done():
		case <-time.After(cfg.idle):
		}
	}
	err = c.Close()
	rep.emit(event{Ev: evClosed})
	return err
}

// runSection is one Lock, Token, writes, Unlock. Before write number
// stallAt (from 0; -1: none), after its check, the holder stalls for longer
// than the TTL, as in a GC pause: its write then comes late, with its old
// token, and the resource must refuse it once a later holder has written.
func runSection(stop context.Context, cfg clientConfig, m *distlock.Mutex, rep *reporter, res *fencedConn, sec, stallAt int) {
	lctx, lcancel := context.WithTimeout(stop, cfg.lockWait)
	lease, err := m.Lock(lctx)
	lcancel()
	if err != nil {
		rep.emit(event{Ev: evLockFail, Sec: sec, Err: err.Error()})
		return
	}
	now, until := wallUntil(lease)
	rep.emit(event{Ev: evAcq, Sec: sec, T: now, Until: until})

	// The loss notice, from Done, unless the section ended first.
	var unlocking sync.Mutex
	ended := false
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		<-lease.Done()
		t := time.Now().UnixNano()
		unlocking.Lock()
		defer unlocking.Unlock()
		if !ended {
			rep.emit(event{Ev: evLoss, Sec: sec, T: t, Err: fmt.Sprint(lease.Err())})
		}
	}()
	defer func() {
		unlocking.Lock()
		ended = true
		unlocking.Unlock()
		rep.emit(event{Ev: evUnlock, Sec: sec})
		uctx, ucancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = lease.Unlock(uctx)
		ucancel()
		<-watched
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok, err := lease.Token(ctx)
	if err != nil {
		rep.emit(event{Ev: evTokFail, Sec: sec, Err: err.Error()})
		return
	}
	rep.emit(event{Ev: evToken, Sec: sec, Tok: tok})
	for w := range cfg.writes {
		select {
		case <-time.After(cfg.gap):
		case <-lease.Done():
		}
		now, until := wallUntil(lease)
		if err := lease.Err(); err != nil || now >= until {
			// Lost or expired: the section stops. Report what the holder
			// saw here (the watcher may not have reported it yet).
			if err == nil {
				err = fmt.Errorf("expired: now is past Until %s", time.Unix(0, until).UTC().Format("15:04:05.000000"))
			}
			rep.emit(event{Ev: evLoss, Sec: sec, T: now, Err: "seen before a write: " + err.Error()})
			return
		}
		rep.emit(event{Ev: evWrite, Sec: sec, T: now, Tok: tok, Until: until})
		if w == stallAt {
			rep.emit(event{Ev: evStall, Sec: sec})
			time.Sleep(cfg.ttl + cfg.ttl/2)
		}
		ok, err := res.write(tok, sec)
		e := event{Ev: evWres, Sec: sec, Tok: tok, OK: ok}
		if err != nil {
			e.Err = err.Error()
		}
		rep.emit(e)
		if !ok && err == nil {
			return // fenced: a later holder wrote
		}
	}
}

// fencedConn is a client's connection to the fenced resource, dialled again
// after a failure.
type fencedConn struct {
	addr string
	id   int
	conn net.Conn
	in   *bufio.Reader
}

func (f *fencedConn) write(tok uint64, sec int) (bool, error) {
	if f.conn == nil {
		c, err := net.DialTimeout("tcp", f.addr, 2*time.Second)
		if err != nil {
			return false, err
		}
		f.conn, f.in = c, bufio.NewReader(c)
	}
	_ = f.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(f.conn, "W %d %d %d\n", tok, f.id, sec); err != nil {
		f.close()
		return false, err
	}
	line, err := f.in.ReadString('\n')
	if err != nil {
		f.close()
		return false, err
	}
	switch {
	case line == "OK\n":
		return true, nil
	case strings.HasPrefix(line, "NO "):
		return false, nil
	}
	f.close()
	return false, fmt.Errorf("resource: %q", line)
}

func (f *fencedConn) close() {
	if f.conn != nil {
		f.conn.Close()
		f.conn = nil
	}
}
