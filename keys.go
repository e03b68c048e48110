package distlock

import (
	"fmt"
	"strings"
)

// The keys and channels of a lock called name.
//
// The lock key is the name itself, so that other Redlock clients using the
// same name (redsync, the Python DistLock) exclude this one and are excluded
// by it. Everything the library derives from the name lives under
// reservedPrefix, which no lock name may start with, so no derived key can
// equal a lock that a user takes. Each derived key and channel carries the
// lock key's Redis Cluster hash tag, so every script touches one slot:
//
//	name without a hash tag, e.g. orders:42:   __distlock:<kind>:{orders:42}
//	name with a hash tag, e.g. {user1}:cart:   __distlock:<kind>:{user1}:{user1}:cart
//
// where kind is fence (the fencing counter), value (a Guarded value),
// leader (an Election's record and channel) or release (the release
// channel). The first form's tag is the whole name, which Redis hashes
// exactly as it hashes the name; the second repeats the name's own tag.
const reservedPrefix = "__distlock:"

// Kinds of derived keys and channels.
const (
	kindFence   = "fence"
	kindValue   = "value"
	kindLeader  = "leader"
	kindRelease = "release"
	kindReaders = "readers" // an RWMutex's reader set
	// kindWriterWaits bars new readers of an RWMutex while a writer waits.
	kindWriterWaits = "writer-waits"
	kindSlot        = "slot" // a Slots' slot i is the lock <slot key>:i
)

// idleChannel is subscribed by every subscriber connection; nothing is
// published on it.
const idleChannel = reservedPrefix + "idle"

// hashTag returns the part of key that Redis Cluster hashes when key has a
// hash tag ("{...}" with at least one byte inside, the first '{' and the
// first '}' after it), and ok false when it has none.
func hashTag(key string) (tag string, ok bool) {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return "", false
	}
	end := strings.IndexByte(key[open+1:], '}')
	if end <= 0 {
		return "", false
	}
	return key[open+1 : open+1+end], true
}

// checkName reports why name cannot be a lock name, or nil.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("distlock: lock name: must not be empty")
	case strings.HasPrefix(name, reservedPrefix):
		return fmt.Errorf("distlock: lock name %q: the prefix %q is reserved for the keys distlock derives", name, reservedPrefix)
	}
	if _, ok := hashTag(name); !ok && strings.ContainsRune(name, '}') {
		// Redis hashes the whole name, and no derived key could carry it as
		// a tag: "{" + name + "}" would end at the name's own '}'.
		return fmt.Errorf("distlock: lock name %q: contains '}' but no hash tag {...}: the keys derived from it could not share its Redis Cluster slot; add a hash tag or leave out '}'", name)
	}
	return nil
}

// derivedKey returns the key or channel of the given kind for the lock
// called name (see reservedPrefix). name must have passed checkName.
func derivedKey(kind, name string) string {
	if tag, ok := hashTag(name); ok {
		return reservedPrefix + kind + ":{" + tag + "}:" + name
	}
	return reservedPrefix + kind + ":{" + name + "}"
}

// keySlot returns key's Redis Cluster hash slot: CRC16 (XMODEM) of its hash
// tag, or of the whole key when it has none, modulo 16384.
func keySlot(key string) int {
	if tag, ok := hashTag(key); ok {
		key = tag
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) & 16383
}
