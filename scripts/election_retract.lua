-- election_retract.lua: delete the leader record of a leader stepping down.
--
-- KEYS[1]  the leader record
-- ARGV[1]  the leader's lease token
--
-- Returns 1 when deleted, 0 when the record belongs to someone else (untouched).
if redis.call('HGET', KEYS[1], 'lease') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
