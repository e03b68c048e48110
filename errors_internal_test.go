package distlock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/gomodule/redigo/redis"
)

// TestClassifyErr: the error replies the docs call transient stay
// transient; every other error reply is permanent; failures of the network
// and of the library itself are transient.
func TestClassifyErr(t *testing.T) {
	tests := map[string]struct {
		err       error
		permanent bool
	}{
		"WRONGPASS":             {redis.Error("WRONGPASS invalid username-password pair or user is disabled."), true},
		"NOAUTH":                {redis.Error("NOAUTH Authentication required."), true},
		"NOPERM":                {redis.Error("NOPERM this user has no permissions to run the 'evalsha' command"), true},
		"db index":              {redis.Error("ERR DB index is out of range"), true},
		"CROSSSLOT":             {redis.Error("CROSSSLOT Keys in request don't hash to the same slot"), true},
		"MOVED":                 {redis.Error("MOVED 3999 127.0.0.1:6381"), true},
		"ASK":                   {redis.Error("ASK 3999 127.0.0.1:6381"), true},
		"WRONGTYPE":             {redis.Error("WRONGTYPE Operation against a key holding the wrong kind of value"), true},
		"READONLY":              {redis.Error("READONLY You can't write against a read only replica."), true},
		"script":                {redis.Error("ERR user_script:1: Script attempted to access nonexistent global variable 'x' script: 1234"), true},
		"OOM in a script":       {redis.Error("OOM command not allowed when used memory > 'maxmemory'. script: 3192864c, on @user_script:16."), false},
		"LOADING":               {redis.Error("LOADING Redis is loading the dataset in memory"), false},
		"BUSY":                  {redis.Error("BUSY Redis is busy running a script."), false},
		"MASTERDOWN":            {redis.Error("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), false},
		"TRYAGAIN":              {redis.Error("TRYAGAIN Multiple keys request during rehashing of slot"), false},
		"CLUSTERDOWN":           {redis.Error("CLUSTERDOWN The cluster is down"), false},
		"OOM":                   {redis.Error("OOM command not allowed when used memory > 'maxmemory'."), false},
		"max clients":           {redis.Error("ERR max number of clients reached"), false},
		"MISCONF":               {redis.Error("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."), false},
		"NOREPLICAS":            {redis.Error("NOREPLICAS Not enough good replicas to write."), false},
		"unknown command":       {redis.Error("ERR unknown command 'EVALSHA', with args beginning with: "), true},
		"AUTH without password": {redis.Error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"), true},
		"old wrong password":    {redis.Error("ERR invalid password"), true},
		"script error in reply": {redis.Error("WRONGTYPE Operation against a key holding the wrong kind of value script: 0b1c..., on @user_script:10."), true},
		"NOSCRIPT":              {redis.Error("NOSCRIPT No matching script. Please use EVAL."), false},
		"EOF":                   {io.EOF, false},
		"timeout":               {context.DeadlineExceeded, false},
		"down":                  {fmt.Errorf("%w: %w", ErrMasterDown, io.EOF), false},
		"down, permanent cause": {fmt.Errorf("%w: %w", ErrMasterDown, classifyErr(redis.Error("WRONGPASS x"))), true},
		"closed":                {ErrClosed, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := classifyErr(tc.err)
			if errors.Is(got, ErrPermanent) != tc.permanent {
				t.Fatalf("classifyErr(%v) = %v: permanent %v, want %v", tc.err, got, !tc.permanent, tc.permanent)
			}
			if !errors.Is(got, tc.err) {
				t.Fatalf("classifyErr(%v) = %v does not wrap the original", tc.err, got)
			}
			if classifyErr(got) != got {
				t.Fatal("classifying twice wraps twice")
			}
		})
	}
}
