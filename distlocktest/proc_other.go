//go:build !linux

package distlocktest

import "syscall"

func procAttr() *syscall.SysProcAttr { return nil }
