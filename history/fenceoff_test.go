//go:build linux && restartfence

// Built with -tags restartfence until distlock.WithoutRestartFence and
// WithRestartFence are on main: then this tag goes away.

package history

import "github.com/distlock/distlock"

func init() {
	fenceOption = func(off bool) distlock.ClientOption {
		if off {
			return distlock.WithoutRestartFence()
		}
		return distlock.WithRestartFence(0)
	}
}
