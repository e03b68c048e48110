-- rw_read.lua: take a read lease on an RWMutex on this master, unless a
-- writer holds the lock or waits for it.
--
-- KEYS[1]  the lock's reader set: a sorted set of reader tokens, scored by
--          the time (the server's, in ms) each reader's lease expires
-- KEYS[2]  the lock key: a writer's token while a writer holds the lock
-- KEYS[3]  the waiting-writer bar: set while a writer waits for the readers
-- ARGV[1]  this read lease's token
-- ARGV[2]  time to live in milliseconds
--
-- Returns the status reply OK when the reader was added. Otherwise returns
-- the remaining time to live in milliseconds of the writer's key or of the
-- bar that keeps new readers out (-1 when it has no expiry). The set
-- expires with its last reader.
local held = redis.call('PTTL', KEYS[2])
if held ~= -2 then
  return held
end
local barred = redis.call('PTTL', KEYS[3])
if barred ~= -2 then
  return barred
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return redis.status_reply('OK')
