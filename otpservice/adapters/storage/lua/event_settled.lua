-- Settle one delivery attempt of an event: 'delivered' (the receiver accepted it), 'retry' (try again
-- at a given time) or 'dead' (its retry window is over: kept aside for operators). A delivered or
-- dead event lets the next event of its verification go at once.
-- A dead letter is kept 30 days from its death: each death also drops a bounded number of those
-- older (the hash's own expiry alone, renewed by every death, would keep them all while any event
-- of the shard keeps dying, a receiver gone for good).
-- KEYS: the shard's delivery schedule, its outbox, its dead letters, their times of death.
-- ARGV: event id, now, outcome, next attempt (ms, for retry), tries so far, last error, lease name.
local DEAD_KEEP_MS = 30 * 86400000
local event, outcome = ARGV[1], ARGV[3]
local payload = redis.call('HGET', KEYS[2], event)
if not payload then return 0 end  -- settled already (a retried settle)
if redis.call('HGET', KEYS[2], event .. '|l') ~= ARGV[7] then return 0 end  -- another worker's now
redis.call('HDEL', KEYS[2], event .. '|f')  -- only a retry of the claim that leased it asks
if outcome == 'retry' then
  redis.call('HSET', KEYS[2], event .. '|t', ARGV[5], event .. '|e', ARGV[6])
  redis.call('ZADD', KEYS[1], ARGV[4], event)
  return 1
end
if outcome == 'dead' then
  redis.call('HSET', KEYS[3], event, payload, event .. '|t', ARGV[5], event .. '|e', ARGV[6],
             event .. '|at', ARGV[2])
  redis.call('ZADD', KEYS[4], ARGV[2], event)
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. (tonumber(ARGV[2]) - DEAD_KEEP_MS),
                         'LIMIT', 0, 100)
  for _, gone in ipairs(old) do
    redis.call('HDEL', KEYS[3], gone, gone .. '|t', gone .. '|e', gone .. '|at')
    redis.call('ZREM', KEYS[4], gone)
  end
  redis.call('PEXPIRE', KEYS[3], DEAD_KEEP_MS)
  redis.call('PEXPIRE', KEYS[4], DEAD_KEEP_MS)
end
redis.call('HDEL', KEYS[2], event, event .. '|t', event .. '|e', event .. '|l')
redis.call('ZREM', KEYS[1], event)
local id, n = string.match(event, '^(.*):(%d+)$')
local next_event = id .. ':' .. (tonumber(n) + 1)
if redis.call('HEXISTS', KEYS[2], next_event) == 1 then redis.call('ZADD', KEYS[1], ARGV[2], next_event) end
return 1
