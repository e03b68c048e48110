-- rw_read_release.lua: end a read lease, and announce when no reader is left.
--
-- KEYS[1]  the RWMutex's reader set (see rw_read.lua)
-- ARGV[1]  the read lease's token
-- ARGV[2]  the lock's release channel, or '' not to announce
-- ARGV[3]  the releasing client's id; the message is "<id>:<token>"
-- ARGV[4]  optional: keep the lease this many more milliseconds instead of
--          removing it (a minimum hold), without announcing anything
--
-- Returns  1+n  removed, and (when it was the last live reader) the release
--               was published to n subscribers
--          0    the lease was not in the set (it expired)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep = tonumber(ARGV[4])
if keep and keep > 0 then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not score or tonumber(score) <= now then
    if score then
      redis.call('ZREM', KEYS[1], ARGV[1]) -- expired: no lease to keep
    end
    return 0
  end
  redis.call('ZADD', KEYS[1], 'XX', now + keep, ARGV[1])
  if redis.call('PTTL', KEYS[1]) < keep then
    redis.call('PEXPIRE', KEYS[1], keep)
  end
  return 1
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if ARGV[2] == '' then
  return 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) > 0 then
  return 1 -- other readers hold it: nobody waiting can get in yet
end
return 1 + redis.call('PUBLISH', ARGV[2], ARGV[3] .. ':' .. ARGV[1])
