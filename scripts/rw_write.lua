-- rw_write.lua: take an RWMutex's write lock on this master if no writer
-- holds it and no reader's lease is live.
--
-- KEYS[1]  the lock key (holds the writer's token, as acquire.lua's)
-- KEYS[2]  the lock's reader set (see rw_read.lua)
-- KEYS[3]  the waiting-writer bar
-- ARGV[1]  this acquisition's token
-- ARGV[2]  time to live in milliseconds
-- ARGV[3]  the id of a writer that waits (Lock), or '' (TryLock)
--
-- Returns the status reply OK when the key was set; then the bar is lifted,
-- whoever set it. Otherwise returns how long in milliseconds the lock stays
-- taken at most: the time until the last live reader's lease expires, or
-- the writer key's PTTL. A writer that waits (ARGV[3] not '') and finds
-- live readers sets the bar, which keeps new readers out for at most the
-- TTL, so that a stream of readers cannot starve it; the bar holds the id of
-- the last writer that set it. A writer kept out by another writer sets no
-- bar: when that one releases, the readers that wait and the next writer
-- contend, so readers get turns between writers. A lock key of another type
-- than a string fails with WRONGTYPE.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #last > 0 then
  if ARGV[3] ~= '' then
    redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
  end
  return tonumber(last[2]) - now
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[3])
  return redis.status_reply('OK')
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'string' then
  return redis.error_reply('WRONGTYPE the lock key holds a ' .. kind .. ', not a lock')
end
return redis.call('PTTL', KEYS[1])
