package distlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// The round engine: every quorum operation of the library (acquire, its
// clean-up, release, extend, the watchdog's batched renewal, fencing, and the
// typed layers' reads and writes) sends one command to every master and
// counts the replies here. Nothing else counts a quorum.
//
// An op says what is sent and how one master's reply counts (its judge); a
// tally counts the votes of one round and decides it; tally.run sends a
// round and waits for the decision. The watchdog feeds its own tallies as
// the replies of its batched calls arrive.

// op is one kind of quorum round.
type op struct {
	name   string // QuorumError.Op
	script *lua   // sent with EVALSHA; nil for the plain command cmd
	cmd    string
	// judge turns one master's reply (not an error) into its vote, and for a
	// no or a failure, the reason.
	judge func(val any) (vote, error)
	// all: the round is decided when every master answered or failed (each
	// bounded by the master timeout), not as soon as the outcome is known.
	all bool
	// gone: a "no" also means the work is done (release: the key is gone
	// already). The round ends at a quorum of yes, at a quorum of no
	// (refused), when too many failed for yes and no together to reach a
	// quorum, or when every master answered; so no early end changes whether
	// the key is gone on a quorum.
	gone bool
	// resend: running the command late or twice is harmless (a release). A
	// master that was down gets it again when it answers, so a command stuck
	// in a stalled server's buffers cannot leave a key behind.
	resend bool
	// keep: keep every master's reply in the tally (vals).
	keep bool
	// exact: a round that does not win hears every master (each bounded by
	// the master timeout), so its caller knows whether any of them did it.
	exact bool
	// agree: an all round ends early once a quorum of masters gave the same
	// answer: arrays whose first elements are equal byte strings (see
	// tally.agreed).
	agree bool
}

// vote is one master's part in a round.
type vote uint8

const (
	pending    vote = iota // not answered yet
	voteYes                // did what was asked
	voteNo                 // answered no: held by another, not ours, refused
	voteFailed             // no usable answer: a failure on the way or at the master
	notSent                // left out of this round
	notAwaited             // sent, but the round does not wait for it
)

// tally counts the votes of one round of an op on one lock.
//
// It keeps the votes of the first 8 masters inline and nothing that points
// into itself, so a tally on the caller's stack stays there: the hot path
// (acquire, release) allocates nothing for it. Errors and replies are kept
// in slices made on demand.
type tally struct {
	c         *Client
	o         *op
	name      string // the lock's name
	n, q      int
	yes       int   // masters that did what was asked
	no        int   // masters that answered no
	failed    int   // masters that failed
	permanent int   // failures that retrying cannot fix (a subset of failed)
	stopped   error // the context's error, if the round was cut short
	// lo and hi are the smallest non-negative and the largest integer reply
	// (-1 when none): the soonest expiry of another holder's key for
	// acquire, and the announcement's reach for release.
	lo, hi int64
	small  [8]vote // the votes of masters 0-7
	more   []vote  // the votes of masters 8 and up
	errs   []error // why each master did not agree; made at the first one
	vals   []any   // each master's reply, when the op keeps them
}

// init prepares t for a round of o on c's masters for the lock name.
func (t *tally) init(c *Client, o *op, name string) {
	n := len(c.masters)
	*t = tally{c: c, o: o, name: name, n: n, q: c.quorum, lo: -1, hi: -1}
	if n > len(t.small) {
		t.more = make([]vote, n-len(t.small))
	}
}

// newTally returns a tally for a round of o on c's masters for the lock name.
func newTally(c *Client, o *op, name string) *tally {
	t := new(tally)
	t.init(c, o, name)
	return t
}

// vote returns master i's vote.
func (t *tally) vote(i int) vote {
	if i < len(t.small) {
		return t.small[i]
	}
	return t.more[i-len(t.small)]
}

// setVote records master i's vote.
func (t *tally) setVote(i int, v vote) {
	if i < len(t.small) {
		t.small[i] = v
	} else {
		t.more[i-len(t.small)] = v
	}
}

// add counts master idx's reply (val, err). A master that already voted, or
// is not part of the round, is not counted again.
func (t *tally) add(idx int, val any, err error) {
	if t.vote(idx) != pending {
		return
	}
	o := t.o
	if o.keep {
		if t.vals == nil {
			t.vals = make([]any, t.n)
		}
		t.vals[idx] = val
	}
	v := voteFailed
	if err == nil {
		if i, ok := val.(int64); ok {
			if i >= 0 && (t.lo < 0 || i < t.lo) {
				t.lo = i
			}
			t.hi = max(t.hi, i)
		}
		v, err = o.judge(val)
	}
	switch v {
	case voteYes:
		t.setVote(idx, voteYes)
		t.yes++
		return
	case voteNo:
		t.setVote(idx, voteNo)
		t.no++
	default:
		t.setVote(idx, voteFailed)
		t.failed++
		if err = classifyErr(err); errors.Is(err, ErrPermanent) {
			t.permanent++
		}
	}
	if t.errs == nil {
		t.errs = make([]error, t.n)
	}
	t.errs[idx] = err
}

// everyMaster is the mask of every master (see masterBit).
const everyMaster = ^uint64(0)

// masterBit is master i's bit in a mask of masters; masters 63 and up
// share the last bit.
func masterBit(i int) uint64 { return 1 << min(i, 63) }

// touched returns the masters where the round's command may have taken
// effect: every master but those that answered no or that it was not sent
// to.
func (t *tally) touched() uint64 {
	mask := everyMaster
	for i := range min(t.n, 63) {
		if t.vote(i) == voteNo || t.vote(i) == notSent || errors.Is(t.errOf(i), errNotSent) {
			mask &^= masterBit(i)
		}
	}
	return mask
}

// leaveOut counts the masters not in mask as having answered no with
// reason, before the round: it is not sent to them.
func (t *tally) leaveOut(mask uint64, reason error) {
	if mask == everyMaster {
		return
	}
	for i := range t.n {
		if mask&masterBit(i) == 0 && t.vote(i) == pending {
			t.setVote(i, voteNo)
			t.no++
			if t.errs == nil {
				t.errs = make([]error, t.n)
			}
			t.errs[i] = reason
		}
	}
}

// sends reports whether the round is sent to master i: it has not voted
// before the round, or is sent without being waited for.
func (t *tally) sends(i int) bool {
	v := t.vote(i)
	return v == pending || v == notAwaited
}

// errOf returns why master i did not agree, or nil.
func (t *tally) errOf(i int) error {
	if t.errs == nil {
		return nil
	}
	return t.errs[i]
}

// won: a quorum did what was asked.
func (t *tally) won() bool { return t.yes >= t.q }

// impossible: so many masters said no or failed that a quorum cannot be won.
func (t *tally) impossible() bool { return t.no+t.failed > t.n-t.q }

// refused: so many masters answered no that a quorum cannot be won whatever
// the others say, now or on a retry of the same question.
func (t *tally) refused() bool { return t.no > t.n-t.q }

// final: failures that retrying cannot fix leave no quorum possible.
func (t *tally) final() bool { return t.permanent > t.n-t.q }

// decided reports whether the round is over.
func (t *tally) decided() bool {
	if t.stopped != nil {
		return true
	}
	if t.o.agree {
		if _, ok := t.agreed(); ok {
			return true
		}
	}
	switch {
	case t.o.all:
		return t.complete()
	case t.o.gone:
		return t.won() || t.refused() || t.failed > t.n-t.q || t.complete()
	case t.won():
		return true
	case t.impossible() && t.o.exact:
		return t.complete()
	case t.impossible():
		// After a failure that retrying cannot fix, hear the rest (each
		// bounded by the master timeout): whether the failure is final
		// depends on how many more masters refuse the same way, and a
		// master down fails at once, before any of them answers.
		return t.permanent == 0 || t.final() || t.complete()
	}
	return false
}

// complete: every master that the round waits for has voted.
func (t *tally) complete() bool {
	for i := range t.n {
		if t.vote(i) == pending {
			return false
		}
	}
	return true
}

// agreed returns a master whose answer a quorum of masters gave too, if
// any: answers are the same when they are arrays whose first elements are
// equal byte strings.
func (t *tally) agreed() (idx int, ok bool) {
	if t.vals == nil {
		return 0, false // no answer yet
	}
	for i := range t.vals {
		a := firstBytes(t.vals[i])
		if a == nil || t.vote(i) != voteYes {
			continue
		}
		same := 0
		for j := range t.vals {
			if t.vote(j) == voteYes && bytes.Equal(a, firstBytes(t.vals[j])) {
				same++
			}
		}
		if same >= t.q {
			return i, true
		}
	}
	return 0, false
}

// firstBytes returns the first element of an array reply when it is a byte
// string, or nil.
func firstBytes(val any) []byte {
	if a, ok := val.([]any); ok && len(a) > 0 {
		b, _ := a[0].([]byte)
		return b
	}
	return nil
}

// yesReplies returns the replies of the masters that voted yes (the op must
// keep replies).
func (t *tally) yesReplies() []any {
	var out []any
	for i := range t.n {
		if t.vote(i) == voteYes && t.vals != nil {
			out = append(out, t.vals[i])
		}
	}
	return out
}

// maybeApplied reports whether some master may have done what the round
// asked without the round confirming it on a quorum: it said yes, or the
// command was sent and its outcome is unknown.
func (t *tally) maybeApplied() bool {
	for i := range t.n {
		switch t.vote(i) {
		case voteYes, pending, notAwaited:
			return true
		case voteFailed:
			if !errors.Is(t.errOf(i), errNotSent) {
				return true
			}
		}
	}
	return false
}

// quorumError returns the error of the round: an entry for every master
// that did not agree, those that had not answered included.
func (t *tally) quorumError() *QuorumError {
	qe := &QuorumError{Op: t.o.name, Name: t.name, Agreed: t.yes, Needed: t.q, Masters: t.n, final: t.final()}
	unanswered := t.stopped
	if unanswered == nil {
		unanswered = errNoAnswer
	}
	for i := range t.n {
		var err error
		switch t.vote(i) {
		case voteYes, notSent:
			continue
		case pending, notAwaited:
			err = unanswered
		default:
			err = t.errOf(i)
		}
		qe.Errors = append(qe.Errors, &MasterError{Addr: t.c.masters[i].addr, Err: err})
	}
	return qe
}

// run sends t's op with args to every master that t does not leave out,
// and counts the replies into t until the round is decided or ctx ends (then
// t.stopped is ctx's error).
func (t *tally) run(ctx context.Context, args []any) {
	if rd, full := t.c.getRound(t.o, args); rd != nil {
		t.await(ctx, rd.cmds[:t.n], full, rd, rd.ch, &rd.refs)
		rd.unref() // the owner's reference: the last reply recycles it
		return
	}
	t.runOn(ctx, args, nil, nil)
}

// runOn runs the round as run does, with the replies going to sink and read
// from replies (which sink feeds until the round is decided); sink nil is a
// channel of its own.
func (t *tally) runOn(ctx context.Context, args []any, sink replySink, replies replyChan) {
	if sink == nil {
		replies = make(replyChan, t.n)
		sink = replies
	}
	cmds, full := newCommands(t.o, args, t.n)
	t.await(ctx, cmds, full, sink, replies, nil)
}

// await sends the round's commands, the op's with the arguments full, to
// every master that t sends it to (see sends), and counts the replies
// into t until the round is decided or ctx ends. The replies go to sink,
// tagged with the master's index, and are read from replies; a sink holds
// one reply per master, so the pipeline never blocks on a round that
// stopped listening. refs, if not nil, is first raised by the commands
// sent: each reply takes one off.
func (t *tally) await(ctx context.Context, cmds []command, full []any, sink replySink, replies replyChan, refs *atomic.Int32) {
	c := t.c
	c.active.Add(1) // Close lets the rounds in flight finish
	defer c.active.Add(-1)
	if refs != nil {
		sent := 0
		for i := range t.n {
			if t.sends(i) {
				sent++
			}
		}
		refs.Add(int32(sent))
	}
	o := t.o
	for i, ms := range c.masters {
		if !t.sends(i) {
			continue
		}
		cmds[i] = command{script: o.script, name: o.cmd, args: full, idx: i, reply: sink, resend: o.resend}
		ms.submit(&cmds[i])
	}
	for !t.decided() {
		select {
		case r := <-replies:
			t.add(r.idx, r.val, r.err)
		case <-ctx.Done():
			t.stopped = ctx.Err()
		}
	}
}

// lateSink feeds a round's replies to the round until it is decided, and
// hands the later ones, which the round no longer reads, to late.
type lateSink struct {
	mu   sync.Mutex
	ch   replyChan
	done bool
	late func(reply) // called by the pipeline's goroutines: must not block
}

func newLateSink(n int, late func(reply)) *lateSink {
	return &lateSink{ch: make(replyChan, n), late: late}
}

func (s *lateSink) put(r reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		s.late(r)
		return
	}
	s.ch <- r
}

// decided ends the round: the replies it did not read, and every later one,
// go to late if keep, and are dropped otherwise.
func (s *lateSink) decided(keep bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if !keep {
		s.late = func(reply) {}
	}
	for {
		select {
		case r := <-s.ch:
			s.late(r)
		default:
			return
		}
	}
}

// round holds what the pipeline needs of one round (its commands, their
// shared arguments, the channel of their replies) for up to 5 masters and
// 8 arguments, and is recycled: the hot path allocates nothing for it. It
// is the sink of its commands' replies. refs counts the replies still to
// come plus one for the round's owner; whoever drops the last reference
// (the pipeline's goroutine that delivers the last reply, or the owner when
// it is done) empties the channel and puts the round back in its pool, so
// no command of it is ever reused while the pipeline holds it.
type round struct {
	cmds [5]command
	args [8]any
	ch   replyChan
	refs atomic.Int32
	pool *sync.Pool
}

// newRoundPool returns the pool of a Client's rounds, for n masters.
func newRoundPool(n int) *sync.Pool {
	p := new(sync.Pool)
	p.New = func() any { return &round{ch: make(replyChan, n), pool: p} }
	return p
}

// getRound returns a round with one reference (the caller's), and the
// arguments of o's command for args in it; or nil when the round does not
// fit.
func (c *Client) getRound(o *op, args []any) (*round, []any) {
	if len(c.masters) > len(round{}.cmds) || 2+len(args) > len(round{}.args) {
		return nil, nil
	}
	rd := c.rounds.Get().(*round)
	rd.refs.Store(1)
	if o.script != nil {
		return rd, o.script.appendEvalsha(rd.args[:0], args...)
	}
	return rd, append(rd.args[:0], args...)
}

// put receives the reply of one of the round's commands (replySink).
func (rd *round) put(r reply) {
	rd.ch <- r
	rd.unref()
}

// unref drops one reference, and recycles the round after the last.
func (rd *round) unref() {
	if rd.refs.Add(-1) != 0 {
		return
	}
	for len(rd.ch) > 0 {
		<-rd.ch
	}
	rd.cmds = [5]command{}
	rd.args = [8]any{}
	rd.pool.Put(rd)
}

// newCommands returns the commands of one round of n masters (to fill in)
// and the arguments of o's command for args.
func newCommands(o *op, args []any, n int) ([]command, []any) {
	if o.script == nil {
		return make([]command, n), append([]any(nil), args...) // args stays the caller's
	}
	return make([]command, n), o.script.evalsha(args...)
}

// err returns nil when the round won, and otherwise its *QuorumError,
// wrapped by refusal (when not nil) if the masters' "no" answers alone left
// no quorum possible.
func (t *tally) err(refusal error) error {
	if t.won() {
		return nil
	}
	qe := t.quorumError()
	if refusal != nil && t.refused() {
		return fmt.Errorf("%w: %w", refusal, qe)
	}
	return qe
}

// isFinal reports whether err ends every retry: the Client is closed, or
// permanent failures leave no quorum possible.
func isFinal(err error) bool {
	var qe *QuorumError
	return errors.Is(err, ErrClosed) || errors.As(err, &qe) && qe.final
}

// judgeDone counts a script's reply 1 (or more) as yes, and 0 or -1 as no
// with the reason the script's header gives them.
func judgeDone(no0, no1 error) func(val any) (vote, error) {
	return func(val any) (vote, error) {
		v, ok := val.(int64)
		switch {
		case ok && v >= replyDone:
			return voteYes, nil
		case ok && v == 0:
			return voteNo, no0
		case ok && v == -1:
			return voteNo, no1
		}
		return voteFailed, unexpected(val)
	}
}

func unexpected(val any) error {
	return fmt.Errorf("unexpected reply %T %v", val, val)
}
