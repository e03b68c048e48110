package distlock

import (
	"testing"

	"github.com/gomodule/redigo/redis"
)

// fuzzReply turns fuzz bytes into a reply of a shape redigo returns (nil,
// an integer, a status string, a bulk string, an error reply, an array of
// those, nested), and returns the bytes it did not use.
func fuzzReply(data []byte, depth int) (any, []byte) {
	if len(data) == 0 {
		return nil, nil
	}
	kind, data := data[0]%6, data[1:]
	take := func() []byte {
		if len(data) == 0 {
			return nil
		}
		n := min(int(data[0]), len(data)-1)
		s := data[1 : 1+n]
		data = data[1+n:]
		return s
	}
	switch kind {
	case 0:
		return nil, data
	case 1:
		var v int64
		for _, b := range take() {
			v = v<<8 | int64(b)
		}
		if len(data) > 0 && data[0]&1 == 1 {
			v = -v
		}
		return v, data
	case 2:
		return string(take()), data
	case 3:
		return take(), data
	case 4:
		return redis.Error(take()), data
	}
	if depth > 3 {
		return []any{}, data
	}
	n := 0
	if len(data) > 0 {
		n, data = int(data[0]%6), data[1:]
	}
	arr := make([]any, n)
	for i := range arr {
		arr[i], data = fuzzReply(data, depth+1)
	}
	return arr, data
}

// everyOp is every kind of quorum round the library sends.
var everyOp = []*op{&acquireOp, &setNXOp, &cleanUpOp, &releaseOp, &extendOp, &fenceReadOp, &fenceWriteOp,
	&guardedReadOp, &guardedWriteOp, &guardedHeldReadOp, &inspectOp, &publishOp, &retractOp, &leaderReadOp,
	&writeAcquireOp, &readAcquireOp, &readReleaseOp, &readCleanUpOp, &readExtendOp, &withdrawOp}

// FuzzReplies: whatever the masters answer, counting the answers of a
// round of any op, deciding it, and building its error never panic, and a
// decided round stays decided; the watchdog's split of a batched reply
// checks the reply's shape.
func FuzzReplies(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{2, 2, 'O', 'K', 2, 2, 'O', 'K', 1, 1, 5})
	f.Add([]byte{1, 1, 1, 1, 1, 0, 1, 1, 0xff, 1})
	f.Add([]byte{5, 2, 3, 1, '7', 3, 3, 'a', 'b', 'c', 4, 6, 'N', 'O', 'S', 'C', 'R', 'I'})
	f.Add([]byte{5, 3, 1, 1, 1, 1, 1, 0, 1, 1, 0xff})
	f.Add([]byte{0, 0, 0})
	c := &Client{masters: []*master{{addr: "m0"}, {addr: "m1"}, {addr: "m2"}}, quorum: 2}
	f.Fuzz(func(t *testing.T, data []byte) {
		var vals [3]any
		rest := data
		for i := range vals {
			vals[i], rest = fuzzReply(rest, 0)
		}
		for _, o := range everyOp {
			var tl tally
			tl.init(c, o, "fuzz")
			for i, v := range vals {
				was := tl.decided()
				tl.add(i, v, nil)
				tl.add(i, v, nil) // a second answer is not counted
				if was && !tl.decided() {
					t.Fatalf("%s: a decided round undecided by master %d's answer %#v", o.name, i, v)
				}
			}
			if tl.yes+tl.no+tl.failed != 3 {
				t.Fatalf("%s: %d yes + %d no + %d failed != 3 masters", o.name, tl.yes, tl.no, tl.failed)
			}
			if !tl.decided() {
				t.Fatalf("%s: every master answered, yet the round is not decided", o.name)
			}
			_ = tl.quorumError().Error()
			_, _ = tl.agreed()
			_ = tl.yesReplies()
			_ = missing(&tl)
			_ = tl.touched()
			_ = tl.err(ErrNotHeld)
		}
		for _, v := range vals {
			_, _ = leaderTerm(v)
			_ = firstBytes(v)
		}
	})
}
