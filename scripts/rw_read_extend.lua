-- rw_read_extend.lua: push back the expiry of read leases (Lease.Extend and
-- the watchdog's batches).
--
-- KEYS[i]      an RWMutex's reader set (see rw_read.lua)
-- ARGV[2i-1]   the token of the read lease in KEYS[i]
-- ARGV[2i]     its new time to live in milliseconds, counted from now
--
-- Returns an array with, for each key: 1 extended, 0 the lease is not in the
-- set or has expired (it is removed). A reader set holds no other owner's
-- entry under our token, so -1 never occurs.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local token, ttl = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local score = redis.call('ZSCORE', key, token)
  if score and tonumber(score) > now then
    redis.call('ZADD', key, 'XX', now + ttl, token)
    if redis.call('PTTL', key) < ttl then
      redis.call('PEXPIRE', key, ttl)
    end
    out[i] = 1
  else
    if score then
      redis.call('ZREM', key, token)
    end
    out[i] = 0
  end
end
return out
