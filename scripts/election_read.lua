-- election_read.lua: the current leader as this master sees it.
--
-- KEYS[1]  the leader record (hash: lease, fence, data)
-- KEYS[2]  the election's lock key
--
-- Returns {fence, data} when the record's leader still holds the lock here,
-- otherwise nil (no leader, or its lease ended without retracting).
local r = redis.call('HMGET', KEYS[1], 'lease', 'fence', 'data')
if not r[1] then
  return false
end
if redis.call('GET', KEYS[2]) ~= r[1] then
  return false
end
return {r[2], r[3]}
