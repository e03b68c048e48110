-- extend.lua: push back the expiry of a lock key that still holds our token.
--
-- KEYS[1]  the lock key
-- ARGV[1]  the lease's token
-- ARGV[2]  new time to live in milliseconds, counted from now
--
-- Returns  1  extended
--          0  the key does not exist (it expired or was deleted)
--         -1  the key holds another token (someone else owns the lock here)
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v then
  return 0
end
return -1
