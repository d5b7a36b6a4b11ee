-- Send dead-lettered events again (operators: `otpservice webhooks retry`): back into the outbox,
-- due now, with a fresh retry window counted from now.
-- KEYS: the shard's delivery schedule, its outbox, its dead letters, their times of death.
-- ARGV: now, event id ('' = all).
local revived = {}
local events = {}
if ARGV[2] ~= '' then
  events = {ARGV[2]}
else
  local flat = redis.call('HKEYS', KEYS[3])
  for _, field in ipairs(flat) do
    if not string.find(field, '|', 1, true) then table.insert(events, field) end
  end
end
for _, event in ipairs(events) do
  local payload = redis.call('HGET', KEYS[3], event)
  if payload then
    local body = cjson.decode(payload)
    body.revived = tonumber(ARGV[1])
    redis.call('HSET', KEYS[2], event, cjson.encode(body))
    redis.call('ZADD', KEYS[1], ARGV[1], event)
    redis.call('HDEL', KEYS[3], event, event .. '|t', event .. '|e', event .. '|at')
    redis.call('ZREM', KEYS[4], event)
    table.insert(revived, event)
  end
end
redis.call('PEXPIRE', KEYS[2], 8 * 86400000)
redis.call('PEXPIRE', KEYS[1], 8 * 86400000)
return revived
