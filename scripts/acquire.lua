-- acquire.lua: take the lock on this master if nobody holds it.
--
-- KEYS[1]  the lock key
-- KEYS[2]  the lock's fencing counter (see fence_read.lua)
-- ARGV[1]  this acquisition's token (unique per acquisition)
-- ARGV[2]  time to live in milliseconds
--
-- Returns the status reply OK when the key was set (the lock is ours on this
-- master). Otherwise returns the current holder's remaining time to live in
-- milliseconds as an integer (-1 when the holder's key has no expiry), so that
-- waiters know how long the holder can still keep it. A lock key that holds
-- another type than a string is no lock: the script fails with WRONGTYPE.
--
-- On success the fencing counter is incremented if it exists. (Locks that never
-- ask for a fencing token never create one.)
local ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if ok then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('INCR', KEYS[2])
  end
  return ok
end
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'string' then
  return redis.error_reply('WRONGTYPE the lock key holds a ' .. t .. ', not a lock')
end
return redis.call('PTTL', KEYS[1])
