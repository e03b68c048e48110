-- inspect.lua: what this master holds for one lock, changing nothing
-- (Client.Inspect).
--
-- KEYS[1]  the lock key
-- KEYS[2]  the fencing counter
--
-- Returns {token, pttl, counter}: the lock key's value (nil when absent),
-- its PTTL in milliseconds (-2 when absent, -1 without expiry), and the
-- fencing counter (nil when absent).
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2])}
