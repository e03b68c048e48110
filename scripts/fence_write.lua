-- fence_write.lua: raise the lock's fencing counter to a token handed out, for
-- a holder that still holds the lock on this master: counter = max(counter, token).
--
-- KEYS[1]  the lock key
-- KEYS[2]  the fencing counter
-- ARGV[1]  the lease's token
-- ARGV[2]  the fencing token, a decimal string (below 2^53)
--
-- Returns 1 when the counter is at least ARGV[2] afterwards, -1 when the lock
-- key does not hold ARGV[1] (nothing written).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local c = redis.call('GET', KEYS[2])
if (not c) or tonumber(c) < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
