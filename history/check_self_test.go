//go:build linux

package history

import (
	"strings"
	"testing"
)

// TestCheckerFinds feeds the checker made-up histories: each violation it
// must report, and the near misses it must not.
func TestCheckerFinds(t *testing.T) {
	const ms = int64(1e6)
	base := int64(1_800_000_000) * 1e9
	at := func(m int64) int64 { return base + m*ms }
	// sec returns the events of a section of client c: acquired at acq, a
	// token, a write at acq+1 (seeing until), Unlock at unlock (0: none).
	sec := func(c, n int, acq, until, unlock int64, tok uint64) []event {
		ev := []event{{C: c, Sec: n, Ev: evAcq, T: at(acq), Until: at(until)}}
		if tok != 0 {
			ev = append(ev, event{C: c, Sec: n, Ev: evToken, T: at(acq), Tok: tok},
				event{C: c, Sec: n, Ev: evWrite, T: at(acq + 1), Tok: tok, Until: at(until)})
		}
		if unlock != 0 {
			ev = append(ev, event{C: c, Sec: n, Ev: evUnlock, T: at(unlock)})
		}
		return ev
	}
	join := func(parts ...[]event) []event {
		var all []event
		for _, p := range parts {
			all = append(all, p...)
		}
		return all
	}
	loss := func(c, n int, when int64) []event { return []event{{C: c, Sec: n, Ev: evLoss, T: at(when)}} }
	cases := []struct {
		name     string
		events   []event
		accepted []write
		want     string // a word of the violation, or "" for none
	}{
		{"disjoint sections", join(sec(0, 1, 0, 500, 10, 1), sec(1, 1, 20, 520, 30, 2)), nil, ""},
		{"overlap", join(sec(0, 1, 0, 500, 100, 1), sec(1, 1, 50, 550, 150, 2)), nil, "OVERLAP"},
		{"the first holder was told of its loss", join(sec(0, 1, 0, 500, 100, 1), loss(0, 1, 40), sec(1, 1, 50, 550, 150, 2)), nil, ""},
		{"the first holder saw a lease ending before", join(sec(0, 1, 0, 45, 300, 1), sec(1, 1, 50, 550, 150, 2)), nil, ""},
		{"one client's sections never overlap each other", join(sec(0, 1, 0, 500, 100, 1), sec(0, 2, 50, 550, 150, 2)), nil, ""},
		{"equal tokens", join(sec(0, 1, 0, 500, 10, 7), sec(1, 1, 20, 520, 30, 7)), nil, "TOKEN ORDER"},
		{"a lower token later", join(sec(0, 1, 0, 500, 10, 7), sec(1, 1, 20, 520, 30, 6)), nil, "TOKEN ORDER"},
		{"no token: not ordered", join(sec(0, 1, 0, 500, 10, 7), sec(1, 1, 20, 520, 30, 0), sec(2, 1, 40, 540, 50, 8)), nil, ""},
		{"a write after a failed Token", join(sec(0, 1, 0, 500, 10, 0), []event{{C: 0, Sec: 1, Ev: evTokFail, T: at(2)}, {C: 0, Sec: 1, Ev: evWrite, T: at(3), Until: at(500)}}), nil, "Token failed"},
		{"writes in token order", join(sec(0, 1, 0, 500, 10, 7), sec(1, 1, 20, 520, 30, 8)),
			[]write{{Tok: 7, Client: 0, Sec: 1, T: at(1)}, {Tok: 8, Client: 1, Sec: 1, T: at(21)}}, ""},
		{"writes out of token order", join(sec(0, 1, 0, 500, 10, 7), sec(1, 1, 20, 520, 30, 8)),
			[]write{{Tok: 8, Client: 1, Sec: 1, T: at(21)}, {Tok: 7, Client: 0, Sec: 1, T: at(22)}}, "WRITE ORDER"},
		{"a write with a token its section never got", sec(0, 1, 0, 500, 10, 7),
			[]write{{Tok: 9, Client: 0, Sec: 1, T: at(1)}}, "matches no token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := check(tc.events, tc.accepted, 0, nil)
			got := strings.Join(r.violations, "\n")
			switch {
			case tc.want == "" && r.failed():
				t.Errorf("violations reported where there is none:\n%s", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("want a violation with %q, got:\n%s", tc.want, got)
			}
		})
	}
}
