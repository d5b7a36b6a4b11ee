-- Cancel a pending verification; a retry with the same token answers "canceled" again.
-- KEYS: record.  ARGV: now, tenant, token.
local v = load()
if not v then return {'not_found'} end
if v.st == 'canceled' and v.ck == ARGV[3] then return answer('canceled') end
local st = status(v)
if st ~= 'pending' then return {'not_pending', st} end
drop_codes()
redis.call('HSET', key, 'st', 'canceled', 'ck', ARGV[3], 'ua', stamp(v))
return answer('canceled')
