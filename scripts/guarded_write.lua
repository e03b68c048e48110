-- guarded_write.lua: store a Guarded value for the lock's holder, fenced by
-- its token.
--
-- KEYS[1]  the lock key
-- KEYS[2]  the value's hash (fields: token, data)
-- ARGV[1]  the writer's lease token
-- ARGV[2]  the writer's fencing token, a decimal string (below 2^53)
-- ARGV[3]  the encoded value
--
-- Returns  1  stored
--          0  refused: the stored value's token is higher than ARGV[2]
--         -1  refused: the lock key does not hold ARGV[1] on this master
--
-- A later holder holds the lock key on a quorum, so an earlier holder's
-- write, which needs its own key, cannot reach a quorum once the later
-- holder has the lock (before it takes its token, and whether or not it has
-- written), and lands nowhere the later holder holds the key, which is where
-- it reads. Writing the same token and value again is allowed: a write whose
-- outcome was unknown can be completed.
--
-- (The lock's fencing counter is not compared: a later holder raises it only
-- where it holds the key, so the key check already covers it, while a
-- counter seeded from a slow master's clock can exceed the holder's own
-- token and would refuse the holder's own writes there.)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local cur = redis.call('HGET', KEYS[2], 'token')
if cur and tonumber(cur) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[2], 'token', ARGV[2], 'data', ARGV[3])
return 1
