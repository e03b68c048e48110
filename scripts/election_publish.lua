-- election_publish.lua: record the leader's value, for a leader that holds the
-- election's lock on this master, and announce it.
--
-- KEYS[1]  the leader record (hash: lease, fence, data)
-- KEYS[2]  the election's lock key
-- ARGV[1]  the leader's lease token
-- ARGV[2]  the leader's fencing token, a decimal string (its term)
-- ARGV[3]  the encoded leader value
-- ARGV[4]  the channel to publish "<fence>:<value>" on
--
-- Returns 1 when recorded, 0 when a record with a higher term is stored, -1
-- when the lock key does not hold ARGV[1].
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local cur = redis.call('HGET', KEYS[1], 'fence')
if cur and tonumber(cur) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'lease', ARGV[1], 'fence', ARGV[2], 'data', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[2] .. ':' .. ARGV[3])
return 1
