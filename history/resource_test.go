//go:build linux

package history

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// write is one write the fenced resource accepted.
type write struct {
	Tok    uint64
	Client int
	Sec    int   // the client's section number
	T      int64 // when it was accepted, Unix ns
}

// resource is the fenced resource: a line protocol on a loopback TCP port.
// A client sends "W token client section\n"; the resource accepts the write
// ("OK\n") when token is at least the highest it has accepted (the same
// holder writes several times), refuses it ("NO highest\n") otherwise, and
// records every accepted write in order.
type resource struct {
	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	highest  uint64
	accepted []write
	refused  int
	conns    map[net.Conn]struct{}
	closed   bool
}

func startResource() (*resource, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &resource{ln: ln, conns: make(map[net.Conn]struct{})}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

func (r *resource) addr() string { return r.ln.Addr().String() }

func (r *resource) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			continue
		}
		r.conns[c] = struct{}{}
		r.mu.Unlock()
		r.wg.Add(1)
		go r.serve(c)
	}
}

func (r *resource) serve(c net.Conn) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
		c.Close()
	}()
	in := bufio.NewScanner(c)
	for in.Scan() {
		reply := r.handle(in.Text())
		if _, err := c.Write([]byte(reply)); err != nil {
			return
		}
	}
}

func (r *resource) handle(line string) string {
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "W" {
		return "ERR bad request\n"
	}
	tok, err1 := strconv.ParseUint(f[1], 10, 64)
	client, err2 := strconv.Atoi(f[2])
	sec, err3 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil || err3 != nil {
		return "ERR bad request\n"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if tok < r.highest {
		r.refused++
		return fmt.Sprintf("NO %d\n", r.highest)
	}
	r.highest = tok
	r.accepted = append(r.accepted, write{Tok: tok, Client: client, Sec: sec, T: time.Now().UnixNano()})
	return "OK\n"
}

// snapshot returns the accepted writes so far and the number refused.
func (r *resource) snapshot() ([]write, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]write(nil), r.accepted...), r.refused
}

// close stops the resource and waits for its goroutines.
func (r *resource) close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.ln.Close()
	r.wg.Wait()
}
