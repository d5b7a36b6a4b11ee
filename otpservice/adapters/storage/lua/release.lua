-- Give back an attempt whose request gave up (storage failed on the way). Leaves a tombstone, so a
-- reservation that lands after this (a stalled server applying queued writes) changes nothing.
-- KEYS: record.  ARGV: now, tenant, token.
if redis.call('EXISTS', key) == 0 then return {'released'} end
if redis.call('HEXISTS', key, 'j:' .. ARGV[3]) == 1 then return {'judged'} end
redis.call('HDEL', key, 'r:' .. ARGV[3])
redis.call('HSET', key, 'x:' .. ARGV[3], ARGV[1])
return {'released'}
