package distlock

import (
	_ "embed"
	"strings"

	"github.com/gomodule/redigo/redis"
)

// The Lua scripts live in scripts/*.lua; each file's header states its KEYS,
// ARGV and return codes. redis.NewScript computes the SHA1 once, so the
// pipeline can send EVALSHA and never keeps hashes by hand.
var (
	//go:embed scripts/acquire.lua
	acquireSrc string
	//go:embed scripts/extend.lua
	extendSrc string
	//go:embed scripts/release.lua
	releaseSrc string
	//go:embed scripts/extend_many.lua
	extendManySrc string
	//go:embed scripts/fence_read.lua
	fenceReadSrc string
	//go:embed scripts/fence_write.lua
	fenceWriteSrc string
	//go:embed scripts/guarded_write.lua
	guardedWriteSrc string
	//go:embed scripts/guarded_read.lua
	guardedReadSrc string
	//go:embed scripts/election_publish.lua
	electionPublishSrc string
	//go:embed scripts/election_read.lua
	electionReadSrc string
	//go:embed scripts/election_retract.lua
	electionRetractSrc string
	//go:embed scripts/rw_read.lua
	rwReadSrc string
	//go:embed scripts/rw_read_extend.lua
	rwReadExtendSrc string
	//go:embed scripts/rw_read_release.lua
	rwReadReleaseSrc string
	//go:embed scripts/rw_write.lua
	rwWriteSrc string
	//go:embed scripts/rw_withdraw.lua
	rwWithdrawSrc string
	//go:embed scripts/inspect.lua
	inspectSrc string

	acquireScript      = newLua(1, acquireSrc)
	extendScript       = newLua(1, extendSrc)
	releaseScript      = newLua(1, releaseSrc)
	extendManyScript   = newLua(-1, extendManySrc) // the key count comes first in the arguments
	fenceReadScript    = newLua(2, fenceReadSrc)
	fenceWriteScript   = newLua(2, fenceWriteSrc)
	guardedWriteScript = newLua(2, guardedWriteSrc)
	guardedReadScript  = newLua(2, guardedReadSrc)
	electionPublish    = newLua(2, electionPublishSrc)
	electionRead       = newLua(2, electionReadSrc)
	electionRetract    = newLua(1, electionRetractSrc)
	rwReadScript       = newLua(3, rwReadSrc)
	rwReadExtendScript = newLua(-1, rwReadExtendSrc)
	rwReadExtendOne    = newLua(1, rwReadExtendSrc) // the same script, for one lease
	rwReadRelease      = newLua(1, rwReadReleaseSrc)
	rwWriteScript      = newLua(3, rwWriteSrc)
	rwWithdrawScript   = newLua(1, rwWithdrawSrc)
	inspectScript      = newLua(2, inspectSrc)

	// scriptSources are loaded (SCRIPT LOAD) on every new connection, before
	// the connection carries any command, so EVALSHA finds them after a
	// master restart.
	scriptSources = []string{acquireSrc, extendSrc, releaseSrc, extendManySrc, fenceReadSrc, fenceWriteSrc, guardedWriteSrc, guardedReadSrc,
		electionPublishSrc, electionReadSrc, electionRetractSrc, rwReadSrc, rwReadExtendSrc, rwReadReleaseSrc, rwWriteSrc, rwWithdrawSrc, inspectSrc}
)

// lua is a script and the number of its keys (-1: the caller passes the
// count first). redis.NewScript computes its SHA1 once.
type lua struct {
	*redis.Script
	keys    int
	hashArg any // the hash and key count, boxed once (boxing allocates)
	keysArg any
	// sharded is the script's twin for Redis Cluster nodes, for a script
	// that announces: the same script with SPUBLISH (sharded pub/sub, Redis
	// 7) for PUBLISH, so that an announcement goes to the subscribers of
	// the node that owns its channel's slot, not over the cluster bus to
	// every node (see shardedSource). nil for the others.
	sharded *lua
}

func newLua(keys int, src string) *lua {
	l := plainLua(keys, src)
	if twin := shardedSource(src); twin != src {
		l.sharded = plainLua(keys, twin)
	}
	return l
}

func plainLua(keys int, src string) *lua {
	s := redis.NewScript(keys, src)
	return &lua{Script: s, keys: keys, hashArg: s.Hash(), keysArg: keys}
}

// shardedSource returns src with its announcements on sharded pub/sub,
// and on plain pub/sub where the server has no SPUBLISH (before Redis 7),
// which a cluster copies to every node.
func shardedSource(src string) string {
	twin := strings.ReplaceAll(src, "redis.call('PUBLISH',", "spublish(")
	if twin == src {
		return src
	}
	return shardedPublish + twin
}

const shardedPublish = `local function spublish(channel, message)
  local ok, n = pcall(redis.call, 'SPUBLISH', channel, message)
  if ok then return n end
  return redis.call('PUBLISH', channel, message)
end
`

// shardedSources are the sharded twins of the scripts that announce,
// loaded on the connections to Redis Cluster nodes.
var shardedSources = func() []string {
	var out []string
	for _, src := range scriptSources {
		if twin := shardedSource(src); twin != src {
			out = append(out, twin)
		}
	}
	return out
}()

// evalsha returns the arguments of EVALSHA for keysAndArgs: built once per
// round and shared by every master's command.
func (s *lua) evalsha(keysAndArgs ...any) []any {
	return s.appendEvalsha(make([]any, 0, 2+len(keysAndArgs)), keysAndArgs...)
}

// appendEvalsha appends the arguments of EVALSHA for keysAndArgs to args.
func (s *lua) appendEvalsha(args []any, keysAndArgs ...any) []any {
	args = append(args, s.hashArg)
	if s.keys >= 0 {
		args = append(args, s.keysArg)
	}
	return append(args, keysAndArgs...)
}

// Replies of extend.lua and release.lua.
const (
	replyDone     = 1  // extended or deleted
	replyMissing  = 0  // the key does not exist
	replyNotOwner = -1 // the key holds another token
)

// isNoScript reports whether err is the server's NOSCRIPT reply to EVALSHA.
func isNoScript(err error) bool {
	return isReply(err, "NOSCRIPT")
}
