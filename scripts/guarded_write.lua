-- guarded_write.lua: store a Guarded value with the writer's fencing token,
-- unless a newer writer's value is already stored.
--
-- KEYS[1]  the value's hash (fields: token, data)
-- ARGV[1]  the writer's fencing token, a decimal string (below 2^53)
-- ARGV[2]  the encoded value
--
-- Returns 1 when stored, 0 when refused: the stored token is higher than ARGV[1]
-- (the writer's lease ended and a later holder wrote since).
local cur = redis.call('HGET', KEYS[1], 'token')
if cur and tonumber(cur) > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'data', ARGV[2])
return 1
