-- release.lua: delete the lock key if, and only if, it still holds our token,
-- and announce the release to waiters.
--
-- KEYS[1]  the lock key
-- ARGV[1]  the lease's token
-- ARGV[2]  the lock's release channel ("<name>:release")
-- ARGV[3]  the releasing client's id, published as the message
--
-- Returns  1+n  deleted, and the release was published to n subscribers
--          0    the key does not exist (it expired or was deleted)
--         -1    the key holds another token (left untouched)
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1 + redis.call('PUBLISH', ARGV[2], ARGV[3])
end
if not v then
  return 0
end
return -1
