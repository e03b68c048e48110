-- guarded_read.lua: read a Guarded value for the lock's holder.
--
-- KEYS[1]  the lock key
-- KEYS[2]  the value's hash (fields: token, data)
-- ARGV[1]  the reader's lease token
--
-- Returns {token, data} (either may be nil: never written), or -1 when the
-- lock key does not hold ARGV[1] on this master. A holder reads only where
-- it holds the key: there, no earlier holder's late write was taken (see
-- guarded_write.lua).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
return redis.call('HMGET', KEYS[2], 'token', 'data')
