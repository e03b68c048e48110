package distlocktest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Server is one redis-server process on a loopback port. Its methods are
// safe for concurrent use.
type Server struct {
	bin     string
	dir     string
	port    int
	tlsPort int      // the TLS port, or 0 (see NewTLSServer)
	extra   []string // more redis-server arguments

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// ErrNoRedis is returned by StartServer when no redis-server binary is found.
var ErrNoRedis = errors.New("distlocktest: redis-server not found: install it (apt-get install -y redis-server, or make redis), point DISTLOCK_REDIS_SERVER at the binary, or set DISTLOCK_SKIP_REDIS=1 to skip the tests that need it")

// StartServer starts a redis-server on a free loopback port and waits until
// it answers PING. Close stops it and removes its directory. extra are more
// redis-server arguments ("--requirepass", "secret", "--maxmemory-policy",
// "allkeys-lru", ...); Restart uses them again. A server started with
// --requirepass is checked with AUTH and the same password.
func StartServer(extra ...string) (*Server, error) {
	bin := os.Getenv("DISTLOCK_REDIS_SERVER")
	if bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("%w (DISTLOCK_REDIS_SERVER: %v)", ErrNoRedis, err)
		}
	} else {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return nil, ErrNoRedis
		}
	}
	dir, err := os.MkdirTemp("", "distlocktest-redis-")
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir, extra: extra}
	// A free port can be taken between our probe and redis' bind; try again.
	for attempt := 0; ; attempt++ {
		if s.port, err = freePort(); err == nil {
			if err = s.start(); err == nil {
				return s, nil
			}
		}
		if attempt == 4 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

// StartServers starts n Servers (see StartServer). On error it stops the
// ones already started. Stop them with CloseAll.
func StartServers(n int) ([]*Server, error) {
	servers := make([]*Server, 0, n)
	for range n {
		s, err := StartServer()
		if err != nil {
			CloseAll(servers)
			return nil, err
		}
		servers = append(servers, s)
	}
	return servers, nil
}

// CloseAll closes every server.
func CloseAll(servers []*Server) {
	for _, s := range servers {
		s.Close()
	}
}

// NewServer starts a Server for t (see StartServer) and stops it in
// t.Cleanup. Without redis-server it fails t, unless DISTLOCK_SKIP_REDIS is
// set, which skips t.
func NewServer(t testing.TB, extra ...string) *Server {
	t.Helper()
	s, err := StartServer(extra...)
	if errors.Is(err, ErrNoRedis) && SkipWithoutRedis() {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// SkipWithoutRedis reports whether tests should skip, rather than fail,
// when redis-server is missing: when the environment variable
// DISTLOCK_SKIP_REDIS is set to anything but "" or "0".
func SkipWithoutRedis() bool {
	v := os.Getenv("DISTLOCK_SKIP_REDIS")
	return v != "" && v != "0"
}

// NewServers starts n Servers for t, each with the extra arguments (see
// NewServer).
func NewServers(t testing.TB, n int, extra ...string) []*Server {
	t.Helper()
	servers := make([]*Server, n)
	for i := range servers {
		servers[i] = NewServer(t, extra...)
	}
	return servers
}

// Addrs returns the servers' addresses.
func Addrs(servers []*Server) []string {
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.Addr()
	}
	return addrs
}

// Addr returns the server's "127.0.0.1:port". It stays the same across
// Restart.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// PID returns the server process's id, or 0 when it is not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--loglevel", "warning",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}
	cmd := exec.Command(s.bin, append(args, s.extra...)...)
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("distlocktest: start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("distlocktest: redis-server on port %d exited at start: %s", s.port, log)
		default:
		}
		if _, err := s.Do("PING"); err == nil || isAuthErr(err) {
			return nil
		} else if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("distlocktest: redis-server on port %d did not answer: %w", s.port, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *Server) signal(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("distlocktest: server not running")
	}
	return s.cmd.Process.Signal(sig)
}

// Kill stops the server with SIGKILL (no clean shutdown) and waits for it to
// exit. Its data is gone. Killing a stopped server is not an error.
func (s *Server) Kill() error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Kill()
	<-exited
	return nil
}

// Pause stops the server process with SIGSTOP: connections stay open and
// new ones are accepted by the kernel, but nothing is answered until Resume.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

// Restart kills the server and starts a new, empty one on the same port, as
// a master restarted without persistence.
func (s *Server) Restart() error {
	s.Kill()
	return s.start()
}

// Close kills the server and removes its directory.
func (s *Server) Close() error {
	s.Kill()
	return os.RemoveAll(s.dir)
}

// Dir returns the server's own directory (its log, and a unix socket if the
// test puts one there).
func (s *Server) Dir() string { return s.dir }

// Do runs one command on the server over a fresh connection, bounded by a
// one-second timeout. It is meant for checks in tests (GET, PTTL, KEYS).
func (s *Server) Do(cmd string, args ...any) (any, error) {
	opts := []redis.DialOption{redis.DialConnectTimeout(time.Second), redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second)}
	for i := 0; i+1 < len(s.extra); i++ {
		if s.extra[i] == "--requirepass" {
			opts = append(opts, redis.DialPassword(s.extra[i+1]))
		}
	}
	c, err := redis.Dial("tcp", s.Addr(), opts...)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

func isAuthErr(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && (strings.HasPrefix(string(re), "NOAUTH") || strings.HasPrefix(string(re), "WRONGPASS"))
}
