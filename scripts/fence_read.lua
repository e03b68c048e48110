-- fence_read.lua: increment and read the lock's fencing counter, for a
-- holder that still holds the lock on this master.
--
-- KEYS[1]  the lock key
-- KEYS[2]  the fencing counter
-- ARGV[1]  the lease's token
--
-- Returns the counter after the increment as a decimal string; when there
-- is no counter (never used, or lost: a restart without persistence), "s"
-- followed by the server's TIME in microseconds, a seed that Token uses only
-- when fewer than a quorum of masters have the counter; or the integer -1
-- when the lock key does not hold ARGV[1]. Nothing is created here: the
-- write-back (fence_write.lua) sets the counter.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('INCR', KEYS[2])
  return redis.call('GET', KEYS[2])
end
local t = redis.call('TIME')
return 's' .. t[1] .. string.format('%06d', tonumber(t[2]))
