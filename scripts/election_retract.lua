-- election_retract.lua: delete the leader record of a leader stepping down,
-- and announce the vacancy.
--
-- KEYS[1]  the leader record (hash: lease, fence, data)
-- ARGV[1]  the leader's lease token
-- ARGV[2]  the channel to publish "<fence>" on (a term with no value: it ended)
--
-- Returns 1 when deleted, 0 when the record belongs to someone else (untouched).
if redis.call('HGET', KEYS[1], 'lease') == ARGV[1] then
  local fence = redis.call('HGET', KEYS[1], 'fence')
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], fence)
  return 1
end
return 0
