package main

import (
	"os"
	"syscall"
	"unsafe"
)

// childAttr makes the command die with distlock (SIGKILL when the thread
// that started it ends; main locks itself to the main thread): once
// distlock is gone nothing renews the lock, so the command must not go on.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// terminalDelivered reports whether sig, typed at a terminal, has already
// reached the command: SIGINT, SIGQUIT and SIGHUP go from the terminal to
// its whole foreground process group, which the command shares with
// distlock when distlock is in the foreground. Forwarding it again would
// deliver it twice (a second Ctrl-C means "stop now" to many programs).
func terminalDelivered(sig os.Signal) bool {
	if sig != syscall.SIGINT && sig != syscall.SIGQUIT && sig != syscall.SIGHUP {
		return false
	}
	var fg int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, os.Stdin.Fd(), syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&fg))); errno != 0 {
		return false // no controlling terminal on stdin
	}
	return int(fg) == syscall.Getpgrp()
}
