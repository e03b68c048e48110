package distlocktest

import "syscall"

// procAttr kills the server when the test process dies, so a crashed test
// leaves no redis-server behind.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
