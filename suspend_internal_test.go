package distlock

import (
	"testing"

	"github.com/benbjohnson/clock"
)

// TestWatchSuspend: the watchdog checks for a suspend with the real clock
// (its times carry monotonic readings), not with a plain mock clock, whose
// times cannot tell one.
func TestWatchSuspend(t *testing.T) {
	for _, tc := range []struct {
		clk  clock.Clock
		want bool
	}{{clock.New(), true}, {clock.NewMock(), false}} {
		c, err := NewClient([]string{"127.0.0.1:1"}, WithClock(tc.clk))
		if err != nil {
			t.Fatal(err)
		}
		if c.watchSuspend != tc.want {
			t.Errorf("%T: watchSuspend %v, want %v", tc.clk, c.watchSuspend, tc.want)
		}
		c.Close()
	}
}
