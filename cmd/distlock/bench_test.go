package main

import (
	"encoding/json"
	"testing"
)

// TestBenchLocalJSON: bench --local 1 --json runs and prints a result that
// parses, uncontended and contended.
func TestBenchLocalJSON(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"bench", "--local", "1", "--duration", "1s", "--json"},
		{"bench", "--local", "1", "--duration", "1s", "--json", "--contended", "--concurrency", "3"},
	} {
		r := dl(t, nil, args...)
		if r.code != 0 {
			t.Fatalf("%q: status %d; stderr: %s", args, r.code, r.stderr)
		}
		var res benchResult
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("%q: %v: %s", args, err, r.stdout)
		}
		if res.Ops == 0 || res.Errors != 0 || res.Masters != 1 || res.OpsPerSec <= 0 {
			t.Errorf("%q: %+v", args, res)
		}
		key := "cycle"
		if res.Mode == "contended" {
			key = "wait"
		}
		if l := res.Latency[key]; l.Count == 0 || l.P50 <= 0 || l.P99 < l.P50 {
			t.Errorf("%q: latency %s: %+v", args, key, l)
		}
	}
}
