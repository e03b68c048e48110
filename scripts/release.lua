-- release.lua: delete the lock key if, and only if, it still holds our token,
-- and announce the release to waiters.
--
-- KEYS[1]  the lock key
-- ARGV[1]  the lease's token
-- ARGV[2]  the lock's release channel ("<name>:release"), or '' not to announce
--          (the clean-up after a failed acquire: that was no release of a held lock)
-- ARGV[3]  the releasing client's id; the message is "<id>:<token>"
--
-- Returns  1+n  deleted, and the release was published to n subscribers
--          0    the key does not exist (it expired or was deleted)
--         -1    the key holds another token (left untouched)
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] == '' then
    return 1
  end
  return 1 + redis.call('PUBLISH', ARGV[2], ARGV[3] .. ':' .. ARGV[1])
end
if not v then
  return 0
end
return -1
