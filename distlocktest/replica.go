package distlocktest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// NewReplica starts a Server for t that replicates master (REPLICAOF), waits
// until its link to master is up and the first sync is done, and stops it in
// t.Cleanup. master must not require a password. Replication is
// asynchronous: a write acknowledged by master may not have reached the
// replica when master dies. Promote makes the replica a master.
func NewReplica(t testing.TB, master *Server) *Server {
	t.Helper()
	r := NewServer(t)
	if err := r.ReplicaOf(master); err != nil {
		t.Fatal(err)
	}
	return r
}

// ReplicaOf makes s a replica of master (REPLICAOF master's host and port)
// and waits, at most 10 seconds, until its link to master is up and the
// first sync is done. s loses its own data. It sets master's
// repl-diskless-sync-delay to 0 (CONFIG SET), so that the first sync starts
// at once instead of after redis' default 5 seconds.
func (s *Server) ReplicaOf(master *Server) error {
	if _, err := master.Do("CONFIG", "SET", "repl-diskless-sync-delay", "0"); err != nil {
		return fmt.Errorf("distlocktest: CONFIG SET on %s: %w", master.Addr(), err)
	}
	host, port, _ := net.SplitHostPort(master.Addr())
	if _, err := s.Do("REPLICAOF", host, port); err != nil {
		return fmt.Errorf("distlocktest: REPLICAOF on %s: %w", s.Addr(), err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := s.Do("INFO", "replication")
		if b, ok := v.([]byte); err == nil && ok && strings.Contains(string(b), "master_link_status:up") &&
			strings.Contains(string(b), "master_sync_in_progress:0") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("distlocktest: replica %s did not sync with %s (last error: %v)", s.Addr(), master.Addr(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Promote makes a replica a master (REPLICAOF NO ONE), as a failover does. It
// keeps the data it had replicated, which may lack master's last writes.
func (s *Server) Promote() error {
	_, err := s.Do("REPLICAOF", "NO", "ONE")
	return err
}
