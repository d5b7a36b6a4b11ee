-- Lease the due events of one shard's outbox to the caller, in order per verification: an event
-- whose predecessor is still in the outbox waits (its predecessor's delivery makes it due again).
-- A leased event's score is its lease end: a worker that dies holding it loses nothing, the event
-- comes due again when the lease ends.
-- Each lease is named (<event>|l): settling an attempt is only taken from the lease's holder, so a
-- worker whose lease ended (and another's began) cannot settle the event under it.
-- An event's first lease is told apart (its lease field is new; <event>|f names that lease until
-- its first attempt is settled), so that it is counted once as emitted, however many workers claim
-- it after one died holding it or its settling was lost. The same claim run again (its reply was
-- lost, and the client sent it again) answers what it leased the first time, first leases included.
-- KEYS: the shard's delivery schedule, its outbox.  ARGV: now, how many at most, lease end (ms),
-- lease name.  Answers event id, payload, tries, first lease (1 or 0), ... for each event leased.
local now = tonumber(ARGV[1])
local leased = {}
local function lease(event, payload, first)
  table.insert(leased, event)
  table.insert(leased, payload)
  table.insert(leased, redis.call('HGET', KEYS[2], event .. '|t') or '0')
  table.insert(leased, first)
end
for _, event in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], ARGV[3])) do
  if redis.call('HGET', KEYS[2], event .. '|l') == ARGV[4] then  -- leased by this very claim
    local first = redis.call('HGET', KEYS[2], event .. '|f') == ARGV[4] and 1 or 0
    lease(event, redis.call('HGET', KEYS[2], event), first)
  end
end
if #leased > 0 then return leased end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
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
      if first == 1 then redis.call('HSET', KEYS[2], event .. '|f', ARGV[4]) end
      lease(event, payload, first)
    end
  end
end
return leased
