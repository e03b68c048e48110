-- extend_many.lua: the watchdog's extensions, many leases in one call.
--
-- KEYS[i]      a lock key
-- ARGV[2i-1]   the token of the lease on KEYS[i]
-- ARGV[2i]     its new time to live in milliseconds, counted from now
--
-- Returns an array with, for each key: 1 extended, 0 the key does not exist,
-- -1 the key holds another token (as extend.lua).
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[2 * i - 1] then
    redis.call('PEXPIRE', key, ARGV[2 * i])
    out[i] = 1
  elseif not v then
    out[i] = 0
  else
    out[i] = -1
  end
end
return out
