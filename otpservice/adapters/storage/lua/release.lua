-- Give back what a request that gave up (storage failed on the way) may have begun: a reserved
-- attempt, or a resend it began but never placed. Leaves a tombstone, so a reservation or a begin
-- that lands after this (a stalled server applying queued writes) changes nothing.
-- KEYS: record, the shard's call schedule.
-- ARGV: now, tenant, token, verification id, retention (ms), the number budget's longest window (ms).
local v = load()
if not v then return {'released'} end
if v['j:' .. ARGV[3]] then return {'judged'} end
redis.call('HDEL', key, 'r:' .. ARGV[3])
redis.call('ZREM', failure_log(v.ph, owner(v)), 'r:' .. ARGV[3])
if v.bt == ARGV[3] and v.ns and tonumber(v.ds) < tonumber(v.ns) then
  unbegin(v, v.ns, KEYS[2], ARGV[4] .. '|' .. v.ns, ARGV[4] .. ':' .. ARGV[3], tonumber(ARGV[6]),
          tonumber(ARGV[5]), true)
end
redis.call('HSET', key, 'x:' .. ARGV[3], ARGV[1])
return {'released'}
