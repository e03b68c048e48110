package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/distlock/distlock"
)

// statusHelp is the synopsis and description of distlock status.
const statusHelp = `
Usage: distlock status [flags] NAME...

Shows, for each lock NAME, what every master holds: whether its key is there,
its remaining TTL and the lock's fencing counter, and whether a quorum of
masters hold the same token (the lock is taken). It changes nothing; by the
time it prints, the lock may have changed hands.

--json prints one JSON object per NAME, one per line (JSON Lines):
  {"name":"backup","held":true,"quorum":2,"masters":[
    {"addr":"r1:6379","held":true,"ttl_ms":9812,"fence":17,"error":""}, ...]}
ttl_ms is 0 when the key is missing and -1 for a key without expiry; error
is "" when the master answered.
`

// statusExamples is the end of distlock status's help.
const statusExamples = `
Examples:
  distlock status --servers r1:6379,r2:6379,r3:6379 nightly-report
  distlock status --json backup deploy | jq 'select(.held) | .name'

Exit status:
  0 every lock was read from at least a quorum of masters (held or not)
  64 usage error
  69 too few masters answered for some NAME to tell whether it is held
`

// statusJSON is one line of status --json.
type statusJSON struct {
	Name    string             `json:"name"`
	Held    bool               `json:"held"`
	Quorum  int                `json:"quorum"`
	Masters []masterStatusJSON `json:"masters"`
}

// masterStatusJSON is one master in status --json.
type masterStatusJSON struct {
	Addr   string `json:"addr"`
	Held   bool   `json:"held"`
	TTLMs  int64  `json:"ttl_ms"`
	Fence  uint64 `json:"fence"`
	ErrMsg string `json:"error"`
}

// cmdStatus is distlock status: see statusHelp.
func cmdStatus(args []string) int {
	fs := newFlagSet("status")
	var common commonFlags
	common.register(fs, false)
	asJSON := fs.Bool("json", false, "print one JSON object per NAME, one per line")
	help := helpFunc(fs, statusHelp, statusExamples)
	names, _, dashdash, err := parseArgs(fs, args)
	if err == nil && (len(names) == 0 || dashdash) {
		err = usagef("want one or more NAMEs")
	}
	if err != nil {
		return parseFailed("status", err, help)
	}
	client, err := common.newClient()
	if err != nil {
		errorf("%v", err)
		return exitUsage
	}
	defer client.Close()

	code := exitOK
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), common.dialTimeout+common.masterTimeout+time.Second)
		st, err := client.Inspect(ctx, name)
		cancel()
		if err != nil {
			errorf("%s: %v", name, err)
			code = exitUnavailable
			continue
		}
		answered := 0
		for _, m := range st.Masters {
			if m.Err == nil {
				answered++
			}
		}
		if answered < st.Quorum {
			code = exitUnavailable
		}
		if *asJSON {
			if err := json.NewEncoder(os.Stdout).Encode(toStatusJSON(st)); err != nil {
				errorf("%v", err)
				return exitUnavailable
			}
		} else {
			printStatus(os.Stdout, st, answered)
		}
	}
	return code
}

// toStatusJSON converts st for status --json.
func toStatusJSON(st *distlock.LockStatus) statusJSON {
	out := statusJSON{Name: st.Name, Held: st.Held, Quorum: st.Quorum, Masters: []masterStatusJSON{}}
	for _, m := range st.Masters {
		mj := masterStatusJSON{Addr: m.Addr, Held: m.Held, TTLMs: m.TTL.Milliseconds(), Fence: m.Fence}
		if m.TTL < 0 {
			mj.TTLMs = -1
		}
		if m.Err != nil {
			mj.ErrMsg = cleanMsg(m.Err.Error())
		}
		out.Masters = append(out.Masters, mj)
	}
	return out
}

// printStatus writes st as a summary line and a table of masters.
func printStatus(w io.Writer, st *distlock.LockStatus, answered int) {
	keys := 0
	for _, m := range st.Masters {
		if m.Held {
			keys++
		}
	}
	n := len(st.Masters)
	switch {
	case st.Held:
		fmt.Fprintf(w, "%s: HELD: a quorum holds it (key on %d of %d masters, quorum %d)\n", st.Name, keys, n, st.Quorum)
	case answered < st.Quorum:
		fmt.Fprintf(w, "%s: UNKNOWN: only %d of %d masters answered, quorum %d (key on %d)\n", st.Name, answered, n, st.Quorum, keys)
	default:
		fmt.Fprintf(w, "%s: not held by a quorum (key on %d of %d masters, quorum %d)\n", st.Name, keys, n, st.Quorum)
	}
	anyErr := answered < n
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if anyErr {
		fmt.Fprintln(tw, "  MASTER\tKEY\tTTL\tFENCE\tERROR")
	} else {
		fmt.Fprintln(tw, "  MASTER\tKEY\tTTL\tFENCE")
	}
	for _, m := range st.Masters {
		held, ttl, fence, errMsg := "-", "-", "-", ""
		if m.Err != nil {
			errMsg = cleanMsg(m.Err.Error())
		} else {
			held = "no"
			if m.Held {
				held = "yes"
				ttl = m.TTL.Round(time.Millisecond).String()
				if m.TTL < 0 {
					ttl = "none"
				}
			}
			fence = fmt.Sprint(m.Fence)
		}
		if anyErr {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", m.Addr, held, ttl, fence, errMsg)
		} else {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", m.Addr, held, ttl, fence)
		}
	}
	tw.Flush()
}
