//go:build linux

package history

import (
	"fmt"
	"sort"
	"strings"
)

// section is one client's critical section, rebuilt from its events.
type section struct {
	c, sec    int
	acq       int64 // Lock returned
	tok       uint64
	tokOK     bool
	tokFail   bool
	loss      int64 // first loss notice, or 0
	unlock    int64 // Unlock began, or 0
	lastUntil int64 // the last Until the holder saw before the section stopped
	end       int64 // min(unlock, loss, lastUntil)
	writes    int   // write attempts
	events    []event
}

func (s *section) String() string {
	return fmt.Sprintf("client %d section %d: acquired %s, ends %s (unlock %s, loss %s, last until seen %s), token %d",
		s.c, s.sec, stamp(s.acq), stamp(s.end), stamp(s.unlock), stamp(s.loss), stamp(s.lastUntil), s.tok)
}

func (e event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s client %d %-7s", stamp(e.T), e.C, e.Ev)
	if e.Tok != 0 {
		fmt.Fprintf(&b, " token %d", e.Tok)
	}
	if e.Until != 0 {
		fmt.Fprintf(&b, " until %s", stamp(e.Until))
	}
	if e.Ev == evWres && e.Err == "" {
		if e.OK {
			b.WriteString(" accepted")
		} else {
			b.WriteString(" REFUSED (fenced)")
		}
	}
	if e.Err != "" {
		fmt.Fprintf(&b, " error: %s", e.Err)
	}
	return b.String()
}

// dump prints the section's events.
func (s *section) dump(b *strings.Builder) {
	fmt.Fprintf(b, "  %s\n", s)
	for _, e := range s.events {
		fmt.Fprintf(b, "    %s\n", e)
	}
}

// report is what the checker found.
type report struct {
	sections      int // sections with an acquisition
	tokens        int // of which with a token
	tokFails      int
	lockFails     int
	losses        int
	attempts      int // write attempts
	accepted      int
	refused       int
	lateAccepted  int // accepted after its writer's section had ended (allowed by fencing: no later token had written yet)
	overlaps      int // check 1
	writeOrder    int // check 2
	tokenOrder    int // check 3
	keysLeft      int // check 4
	leaks         int // check 5
	violations    []string
	faultsByKind  string
	unknownWrites int // accepted writes that match no section with that token
}

func (r *report) failed() bool { return len(r.violations) > 0 }

func (r *report) totals() string {
	return fmt.Sprintf("sections=%d (tokens %d, token failures %d), lock failures=%d, loss notices=%d, writes attempted=%d accepted=%d refused=%d (accepted after the writer's section ended: %d), overlaps=%d, writes out of token order=%d, token order violations=%d, keys left=%d, goroutines left=%d; faults: %s",
		r.sections, r.tokens, r.tokFails, r.lockFails, r.losses, r.attempts, r.accepted, r.refused, r.lateAccepted,
		r.overlaps, r.writeOrder, r.tokenOrder, r.keysLeft, r.leaks, r.faultsByKind)
}

// sections rebuilds the critical sections from the events (in each
// client's own order).
func sections(events []event) ([]*section, map[[2]int]*section, int) {
	byKey := map[[2]int]*section{}
	var all []*section
	lockFails := 0
	for _, e := range events {
		if e.Ev == evLockFail {
			lockFails++
			continue
		}
		if e.Ev == evClosed {
			continue
		}
		k := [2]int{e.C, e.Sec}
		s := byKey[k]
		if s == nil {
			s = &section{c: e.C, sec: e.Sec}
			byKey[k] = s
			all = append(all, s)
		}
		s.events = append(s.events, e)
		switch e.Ev {
		case evAcq:
			s.acq = e.T
		case evToken:
			s.tok, s.tokOK = e.Tok, true
		case evTokFail:
			s.tokFail = true
		case evWrite:
			s.writes++
		case evLoss:
			if s.loss == 0 {
				s.loss = e.T
			}
		case evUnlock:
			s.unlock = e.T
		}
	}
	for _, s := range all {
		stop := int64(0)
		for _, t := range []int64{s.unlock, s.loss} {
			if t != 0 && (stop == 0 || t < stop) {
				stop = t
			}
		}
		for _, e := range s.events {
			if (e.Ev == evAcq || e.Ev == evWrite) && (stop == 0 || e.T <= stop) && e.Until > s.lastUntil {
				s.lastUntil = e.Until
			}
		}
		s.end = s.lastUntil
		if stop != 0 && stop < s.end {
			s.end = stop
		}
	}
	return all, byKey, lockFails
}

// check runs checks 1 to 3 on a run's events and the resource's accepted
// writes (checks 4 and 5 are the caller's: they need the servers).
func check(events []event, accepted []write, refused int, faults []fault) *report {
	all, byKey, lockFails := sections(events)
	r := &report{lockFails: lockFails, refused: refused, accepted: len(accepted)}
	var held []*section
	for _, s := range all {
		if s.acq == 0 {
			r.violations = append(r.violations, fmt.Sprintf("client %d section %d has events but no acquisition", s.c, s.sec))
			continue
		}
		r.sections++
		r.attempts += s.writes
		if s.tokOK {
			r.tokens++
		}
		if s.tokFail {
			r.tokFails++
			if s.writes > 0 {
				var b strings.Builder
				fmt.Fprintf(&b, "a holder whose Token failed wrote:\n")
				s.dump(&b)
				r.violations = append(r.violations, b.String())
			}
		}
		if s.loss != 0 {
			r.losses++
		}
		held = append(held, s)
	}
	sort.Slice(held, func(i, j int) bool { return held[i].acq < held[j].acq })

	// Check 1: sections of different clients that overlap in time.
	for i, a := range held {
		if a.end <= a.acq {
			continue
		}
		for _, b := range held[i+1:] {
			if b.acq >= a.end {
				break
			}
			if b.c == a.c || b.end <= b.acq {
				continue
			}
			r.overlaps++
			var sb strings.Builder
			fmt.Fprintf(&sb, "OVERLAP: two holders at once for %v, neither told of a loss:\n", timeSpan(b.acq, min(a.end, b.end)))
			a.dump(&sb)
			b.dump(&sb)
			faultsNear(&sb, faults, a.acq, max(a.end, b.end))
			r.violations = append(r.violations, sb.String())
		}
	}

	// Check 2: the resource accepted writes in token order; every accepted
	// write belongs to a section that got that token.
	var last uint64
	for i, w := range accepted {
		if w.Tok < last {
			r.writeOrder++
			r.violations = append(r.violations, fmt.Sprintf("WRITE ORDER: accepted write %d (client %d section %d token %d at %s) after token %d",
				i, w.Client, w.Sec, w.Tok, stamp(w.T), last))
		}
		last = max(last, w.Tok)
		s := byKey[[2]int{w.Client, w.Sec}]
		if s == nil || !s.tokOK || s.tok != w.Tok {
			r.unknownWrites++
			r.violations = append(r.violations, fmt.Sprintf("accepted write of client %d section %d token %d matches no token that section got", w.Client, w.Sec, w.Tok))
			continue
		}
		if w.T > s.end {
			r.lateAccepted++
		}
	}

	// Check 3: each token is strictly greater than every token handed out
	// to earlier acquisitions (sections without a token do not count: they
	// must not write, checked above).
	var best *section
	for _, s := range held {
		if !s.tokOK {
			continue
		}
		if best != nil && s.tok <= best.tok {
			r.tokenOrder++
			var sb strings.Builder
			fmt.Fprintf(&sb, "TOKEN ORDER: token %d is not greater than the earlier acquisition's %d:\n", s.tok, best.tok)
			best.dump(&sb)
			s.dump(&sb)
			faultsNear(&sb, faults, best.acq, s.end)
			r.violations = append(r.violations, sb.String())
		}
		if best == nil || s.tok > best.tok {
			best = s
		}
	}
	return r
}

func timeSpan(from, to int64) string {
	return fmt.Sprintf("%.3fms", float64(to-from)/1e6)
}

// faultsNear prints the faults active within a second of [from, to].
func faultsNear(b *strings.Builder, faults []fault, from, to int64) {
	const slack = int64(1e9)
	fmt.Fprintf(b, "  faults around:\n")
	for _, f := range faults {
		if f.Start <= to+slack && (f.End == 0 || f.End >= from-slack) {
			fmt.Fprintf(b, "    %s\n", f)
		}
	}
}
