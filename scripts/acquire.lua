-- acquire.lua: take the lock on this master if nobody holds it. The first
-- round of Lock and TryLock sends plain SET NX PX instead (see
-- Mutex.acquire); this script answers the rounds after a refusal, which need
-- the holder's time to live.
--
-- KEYS[1]  the lock key
-- ARGV[1]  this acquisition's token (unique per acquisition)
-- ARGV[2]  time to live in milliseconds
--
-- Returns the status reply OK when the key was set (the lock is ours on this
-- master). Otherwise returns the current holder's remaining time to live in
-- milliseconds as an integer (-1 when the holder's key has no expiry), so that
-- waiters know how long the holder can still keep it. A lock key that holds
-- another type than a string is no lock: the script fails with WRONGTYPE.
local ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if ok then
  return ok
end
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'string' then
  return redis.error_reply('WRONGTYPE the lock key holds a ' .. t .. ', not a lock')
end
return redis.call('PTTL', KEYS[1])
