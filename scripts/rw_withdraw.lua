-- rw_withdraw.lua: a writer that stopped waiting lifts the bar it set, and
-- tells the readers it kept out.
--
-- KEYS[1]  the waiting-writer bar (see rw_write.lua)
-- ARGV[1]  the writer's waiter id
-- ARGV[2]  the lock's release channel
-- ARGV[3]  the client's id; the message is "<id>:<waiter id>"
--
-- Returns 1 when the bar was this writer's and is lifted, 0 otherwise (it
-- expired, or a later waiting writer set it: it stays).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3] .. ':' .. ARGV[1])
return 1
