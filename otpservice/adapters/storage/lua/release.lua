-- Give back what a request that gave up (storage failed on the way) may have begun: a reserved
-- attempt, or a resend it began but never gave the provider. Leaves a tombstone, so a reservation
-- or a begin that lands after this (a stalled server applying queued writes) changes nothing.
-- KEYS: record, the shard's call schedule.
-- ARGV: now, tenant, token, verification id, retention (ms), the number budget's longest window (ms).
local v = load()
if not v then return {'released'} end
local token, id = ARGV[3], ARGV[4]
if v['j:' .. token] then return {'judged'} end
redis.call('HDEL', key, 'r:' .. token)
redis.call('ZREM', failure_log(v.ph, owner(v)), 'r:' .. token)
if v.bt == token then
  local call, span = id .. ':' .. token, tonumber(ARGV[6])
  if v.ns then
    unbegin(v, v.ns, KEYS[2], id .. '|' .. v.ns, call, span, tonumber(ARGV[5]), true, 'failed',
            'not placed: storage unavailable')
  else
    -- the verification ended meanwhile: only its schedule entry and its budget count are left
    redis.call('ZREM', KEYS[2], id .. '|' .. v.sq)
    budget_give_back(number_key(v.ph, 'calls'), number_key(v.ph, 'back'), call, now, span)
  end
  redis.call('HDEL', key, 'bt')
end
redis.call('HSET', key, 'x:' .. token, ARGV[1])
emit_changes()
return {'released'}
