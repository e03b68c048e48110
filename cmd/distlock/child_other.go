//go:build !linux

package main

import (
	"os"
	"syscall"
)

// childAttr: only Linux can make the command die with distlock.
func childAttr() *syscall.SysProcAttr { return nil }

// terminalDelivered: without a way to tell, every signal is forwarded.
func terminalDelivered(os.Signal) bool { return false }
