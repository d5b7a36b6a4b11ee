-- Lease the due events of one shard's outbox to the caller, in order per verification: an event
-- whose predecessor is still in the outbox waits (its predecessor's delivery makes it due again).
-- A leased event's score is its lease end: a worker that dies holding it loses nothing, the event
-- comes due again when the lease ends.
-- Each lease is named (<event>|l): settling an attempt is only taken from the lease's holder, so a
-- worker whose lease ended (and another's began) cannot settle the event under it.
-- An event's first lease is told apart (its lease field is new), so that it is counted once as
-- emitted, however many workers claim it after one died holding it or its settling was lost.
-- KEYS: the shard's delivery schedule, its outbox.  ARGV: now, how many at most, lease end (ms),
-- lease name.  Answers event id, payload, tries, first lease (1 or 0), ... for each event leased.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local leased = {}
for _, event in ipairs(due) do
  local payload = redis.call('HGET', KEYS[2], event)
  if not payload then
    redis.call('ZREM', KEYS[1], event)  -- delivered or dead-lettered meanwhile
  else
    local id, n = string.match(event, '^(.*):(%d+)$')
    if tonumber(n) > 1 and redis.call('HEXISTS', KEYS[2], id .. ':' .. (tonumber(n) - 1)) == 1 then
      redis.call('ZADD', KEYS[1], now + 30000, event)  -- its predecessor first; 30 s is a safety net
    else
      redis.call('ZADD', KEYS[1], ARGV[3], event)
      local first = redis.call('HSET', KEYS[2], event .. '|l', ARGV[4])
      table.insert(leased, event)
      table.insert(leased, payload)
      table.insert(leased, redis.call('HGET', KEYS[2], event .. '|t') or '0')
      table.insert(leased, first)
    end
  end
end
return leased
