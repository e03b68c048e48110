//go:build linux && restartfence

// Built with -tags restartfence until distlock.WithoutRestartFence is on
// main: then this tag goes away.

package history

import "github.com/distlock/distlock"

func init() { withoutRestartFence = distlock.WithoutRestartFence }
