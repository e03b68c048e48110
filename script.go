package distlock

import (
	_ "embed"
	"errors"
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

	acquireScript = redis.NewScript(1, acquireSrc)
	extendScript  = redis.NewScript(1, extendSrc)
	releaseScript = redis.NewScript(1, releaseSrc)

	// allScripts are loaded (SCRIPT LOAD) on every new connection, before the
	// connection carries any command, so EVALSHA finds them after a master
	// restart.
	allScripts = []*redis.Script{acquireScript, extendScript, releaseScript}
)

// Replies of extend.lua and release.lua.
const (
	replyDone     = 1  // extended or deleted
	replyMissing  = 0  // the key does not exist
	replyNotOwner = -1 // the key holds another token
)

// isNoScript reports whether err is the server's NOSCRIPT reply to EVALSHA.
func isNoScript(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(string(re), "NOSCRIPT")
}
