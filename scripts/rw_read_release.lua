-- rw_read_release.lua: end a read lease, and announce when no reader is left.
--
-- KEYS[1]  the RWMutex's reader set (see rw_read.lua)
-- ARGV[1]  the read lease's token
-- ARGV[2]  the lock's release channel, or '' not to announce
-- ARGV[3]  the releasing client's id; the message is "<id>:<token>"
--
-- Returns  1+n  removed, and (when it was the last live reader) the release
--               was published to n subscribers
--          0    the lease was not in the set (it expired)
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if ARGV[2] == '' then
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) > 0 then
  return 1 -- other readers hold it: nobody waiting can get in yet
end
return 1 + redis.call('PUBLISH', ARGV[2], ARGV[3] .. ':' .. ARGV[1])
