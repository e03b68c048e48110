-- guarded_write.lua: store a Guarded value for the lock's holder, fenced by
-- its token.
--
-- KEYS[1]  the lock key
-- KEYS[2]  the value's hash (fields: token, data)
-- KEYS[3]  the lock's fencing counter (see fence_read.lua)
-- ARGV[1]  the writer's lease token
-- ARGV[2]  the writer's fencing token, a decimal string (below 2^53)
-- ARGV[3]  the encoded value
--
-- Returns  1  stored
--          0  refused: the stored value's token or the fencing counter is
--             higher than ARGV[2] (a later holder has a higher token)
--         -1  refused: the lock key does not hold ARGV[1] on this master
--
-- Every later holder's acquisition holds the lock key and raises the counter
-- where it succeeds (and its Token writes its token back on a quorum), so
-- once a later holder has its token, an earlier holder's write cannot reach
-- a quorum, whether or not the later one has written; and no master where
-- the later holder holds the key takes it, which is where that holder reads.
-- Writing the same token and value again is allowed: a write whose outcome
-- was unknown can be completed.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local t = tonumber(ARGV[2])
local cur = redis.call('HGET', KEYS[2], 'token')
if cur and tonumber(cur) > t then
  return 0
end
local fence = redis.call('GET', KEYS[3])
if fence and tonumber(fence) and tonumber(fence) > t then
  return 0
end
redis.call('HSET', KEYS[2], 'token', ARGV[2], 'data', ARGV[3])
return 1
