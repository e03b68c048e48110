package distlocktest

import "errors"

// Start starts a server stopped by Kill again, on the same port and with the
// same arguments, and waits until it answers PING, as Restart does after its
// Kill. Its data is gone: it comes back empty, as a master restarted without
// persistence. Kill followed later by Start is a master that stays down for
// a while. Starting a server that is running is an error.
func (s *Server) Start() error {
	s.mu.Lock()
	running := s.cmd != nil
	s.mu.Unlock()
	if running {
		return errors.New("distlocktest: server already running")
	}
	return s.start()
}
