package distlock_test

import (
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/distlock/distlock"
)

// The fuzz targets run their seed corpora with every `go test`; run one
// for longer with, for example:
//
//	go test -run '^$' -fuzz FuzzAddress -fuzztime 1m .

// FuzzAddress: any address string gives a Client or an error, never a
// panic; NewClient does not dial.
func FuzzAddress(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1:6379", "localhost", "redis://u:p@h:1/2", "rediss://h", "unix:///tmp/redis.sock",
		"", " ", "redis://[::1]:6379", "redis://h:99999", "h:0", "%zz", "redis://:pass@h", "redis://h/-1",
		"redis://h/99999999999999999999", "http://h:1", "redis://u@h", "[::1]", "h:06379", "unix://", "redis://%41:%@h",
		strings.Repeat("a", 70000) + ":1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		c, err := distlock.NewClient([]string{addr})
		if err == nil {
			c.Close()
		}
	})
}

// FuzzAddressSecret: a password in an address never appears in the error
// about that address.
func FuzzAddressSecret(f *testing.F) {
	f.Add("hunter", "127.0.0.1:6379/99999")
	f.Add("Secret", "h:notaport")
	f.Add("passwd", "[::1")
	f.Add("letmein", "h:1/x")
	f.Fuzz(func(t *testing.T, pass, rest string) {
		if len(pass) < 4 || strings.IndexFunc(pass, func(r rune) bool { return !unicode.IsLetter(r) || r > unicode.MaxASCII }) >= 0 {
			return // a password that could also be a piece of the rest of the address
		}
		if strings.Contains(strings.ToLower(rest), strings.ToLower(pass)) || strings.Contains("redis://user:@", strings.ToLower(pass)) {
			return
		}
		c, err := distlock.NewClient([]string{"redis://user:" + pass + "@" + rest})
		if err != nil {
			if strings.Contains(err.Error(), pass) {
				t.Fatalf("the password %q is in the error: %v", pass, err)
			}
			return
		}
		c.Close()
	})
}

// FuzzLockName: any name gives a Mutex or an error naming the problem,
// never a panic; for every name accepted, each key and channel derived
// from it is in the name's own Redis Cluster slot.
func FuzzLockName(f *testing.F) {
	for _, s := range []string{"orders:42", "{user1}:cart", "", "}", "{", "{}", "a{}b", "{a}{b}", "__distlock:x", "x}y", "{x}}", "é{ü}", "\x00", strings.Repeat("n", 1<<16)} {
		f.Add(s)
	}
	c, err := distlock.NewClient([]string{"127.0.0.1:1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	f.Fuzz(func(t *testing.T, name string) {
		m, err := c.NewMutex(name)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "distlock: lock name") {
				t.Fatalf("NewMutex(%q): %v", name, err)
			}
			return
		}
		if m.Name() != name {
			t.Fatalf("Name() = %q, want %q", m.Name(), name)
		}
		want := distlock.KeySlot(name)
		for _, kind := range []string{"fence", "value", "leader", "release", "readers", "writer-waits", "slot"} {
			if k := distlock.KeyOf(kind, name); distlock.KeySlot(k) != want {
				t.Fatalf("%s key %q of %q: slot %d, the name's is %d", kind, k, name, distlock.KeySlot(k), want)
			}
		}
	})
}

// FuzzLockOptions: any durations and drift factor give a Mutex or an error
// naming the option, never a panic.
func FuzzLockOptions(f *testing.F) {
	f.Add(int64(10*time.Second), 0.01, int64(2*time.Millisecond), int64(0), int64(0), int64(0), int64(0), false)
	f.Add(int64(time.Millisecond), 0.99, int64(-1), int64(-1), int64(-1), int64(-1), int64(-1), true)
	f.Add(int64(1<<62), 0.5, int64(1<<62), int64(1<<61), int64(1<<61), int64(1<<62), int64(1<<62), false)
	f.Add(int64(3*time.Second), -0.1, int64(0), int64(time.Second), int64(time.Second), int64(0), int64(0), false)
	c, err := distlock.NewClient([]string{"127.0.0.1:1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	f.Fuzz(func(t *testing.T, ttl int64, factor float64, constant, interval, margin, maxHold, minHold int64, noRenewal bool) {
		opts := []distlock.Option{
			distlock.WithTTL(time.Duration(ttl)),
			distlock.WithDrift(factor, time.Duration(constant)),
			distlock.WithMaxHold(time.Duration(maxHold)),
			distlock.WithMinHold(time.Duration(minHold)),
		}
		if interval != 0 {
			opts = append(opts, distlock.WithRenewalInterval(time.Duration(interval)))
		}
		if margin != 0 {
			opts = append(opts, distlock.WithRenewalMargin(time.Duration(margin)))
		}
		if noRenewal {
			opts = append(opts, distlock.WithoutRenewal())
		}
		if _, err := c.NewMutex("fuzz", opts...); err != nil && !strings.HasPrefix(err.Error(), "distlock: With") {
			t.Fatalf("an error that names no option: %v", err)
		}
	})
}
