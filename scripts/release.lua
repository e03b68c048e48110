-- release.lua: delete the lock key if, and only if, it still holds our token,
-- and announce the release to waiters.
--
-- KEYS[1]  the lock key
-- ARGV[1]  the lease's token
-- ARGV[2]  the lock's release channel ("<name>:release"), or '' not to announce
--          (the clean-up after a failed acquire: that was no release of a held lock)
-- ARGV[3]  the releasing client's id; the message is "<id>:<token>"
-- ARGV[4]  optional: keep the key this many more milliseconds instead of
--          deleting it (a minimum hold), without announcing anything
--
-- Returns  1+n  deleted, and the release was published to n subscribers
--               (1 when kept)
--          0    the key does not exist (it expired or was deleted)
--         -1    the key holds another token (left untouched)
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  local keep = tonumber(ARGV[4])
  if keep and keep > 0 then
    redis.call('PEXPIRE', KEYS[1], keep)
    return 1
  end
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
