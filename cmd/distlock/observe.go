package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/distlock/distlock"
)

// observeHelp is the synopsis and description of distlock observe.
const observeHelp = `
Usage: distlock observe [flags] NAME

Prints who leads the election NAME, then one line per change (a new leader,
or "no leader" when the leader resigned or its lease ended), until SIGINT or
SIGTERM. Each line has the time, the leader's value (its --id for a leader
run by 'distlock elect'; the raw JSON for other values) and the term (the
leader's fencing token; for "no leader", the term that ended).

--json prints one JSON object per line instead:
  {"time":"2026-12-03T04:30:00.123Z","leader":"web-1:4242","vacant":false,"term":17}
"leader" is the value as stored (a JSON string for 'distlock elect'; other
JSON as is), null when vacant.

--ttl sets how often the leader is read again, to notice a leader that died
without resigning even if no announcement arrives.
`

// observeExamples is the end of distlock observe's help.
const observeExamples = `
Examples:
  distlock observe --servers r1:6379,r2:6379,r3:6379 scheduler
  distlock observe --json scheduler | jq .leader

Exit status:
  0 after SIGINT or SIGTERM, 64 usage error, 69 the masters could not be read
`

// rawCodec is a distlock.Codec that passes the stored bytes through, so that
// observe can show the leader of an election whatever its value type.
type rawCodec struct{}

// Marshal returns v.
func (rawCodec) Marshal(v []byte) ([]byte, error) { return v, nil }

// Unmarshal returns a copy of data.
func (rawCodec) Unmarshal(data []byte) ([]byte, error) { return append([]byte(nil), data...), nil }

// observeEvent is one line of observe --json.
type observeEvent struct {
	Time   time.Time       `json:"time"`
	Leader json.RawMessage `json:"leader"`
	Vacant bool            `json:"vacant"`
	Term   uint64          `json:"term"`
}

// cmdObserve is distlock observe: see observeHelp.
func cmdObserve(args []string) int {
	fs := newFlagSet("observe")
	var common commonFlags
	common.register(fs, true)
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	help := helpFunc(fs, observeHelp, observeExamples)
	pos, _, dashdash, err := parseArgs(fs, args)
	if err == nil && (len(pos) != 1 || dashdash) {
		err = usagef("want exactly one NAME")
	}
	if err != nil {
		return parseFailed("observe", err, help)
	}
	name := pos[0]

	client, err := common.newClient()
	if err != nil {
		errorf("%v", err)
		return exitUsage
	}
	defer client.Close()
	e, err := distlock.NewElection[[]byte](client, name, rawCodec{}, distlock.WithTTL(common.ttl))
	if err != nil {
		errorf("%v", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), forwardedSignals...)
	defer stop()
	defer signal.Ignore(forwardedSignals...) // before stop (defers run last first): a late signal must not kill the exit
	// Observe retries failing masters silently: read the leader once
	// first, so that unreachable masters or refused credentials end with 69.
	rctx, rcancel := context.WithTimeout(ctx, common.dialTimeout+common.masterTimeout+time.Second)
	_, _, err = e.Leader(rctx)
	rcancel()
	if err != nil && ctx.Err() == nil {
		errorf("%s: %v", name, err)
		return exitUnavailable
	}
	enc := json.NewEncoder(os.Stdout)
	for l := range e.Observe(ctx) {
		now := time.Now()
		if *asJSON {
			ev := observeEvent{Time: now.UTC(), Leader: jsonValue(l.Value), Vacant: l.Vacant, Term: l.Term}
			if l.Vacant {
				ev.Leader = json.RawMessage("null")
			}
			if err := enc.Encode(ev); err != nil {
				errorf("%v", err)
				return exitUnavailable
			}
			continue
		}
		ts := now.Format("2006-01-02T15:04:05.000Z07:00")
		switch {
		case l.Vacant && l.Term == 0:
			fmt.Printf("%s  no leader\n", ts)
		case l.Vacant:
			fmt.Printf("%s  no leader  (term %d ended)\n", ts, l.Term)
		default:
			fmt.Printf("%s  leader %s  term %d\n", ts, displayValue(l.Value), l.Term)
		}
	}
	if ctx.Err() == nil {
		errorf("%s: observing ended: the client was closed", name)
		return exitUnavailable
	}
	return exitOK
}

// jsonValue returns the stored value as JSON: itself when it is valid JSON,
// else as a JSON string.
func jsonValue(v []byte) json.RawMessage {
	if json.Valid(v) {
		return json.RawMessage(v)
	}
	b, _ := json.Marshal(string(v))
	return b
}

// displayValue returns the stored value for a text line: a JSON string
// unquoted when it has no spaces or control characters, anything else as
// stored (quoted when not valid JSON).
func displayValue(v []byte) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		if q := strconv.Quote(s); q[1:len(q)-1] == s && s != "" && !strings.ContainsRune(s, ' ') {
			return s
		}
		return strconv.Quote(s)
	}
	if json.Valid(v) {
		return string(v)
	}
	return strconv.Quote(string(v))
}
