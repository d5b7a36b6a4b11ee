-- Create a verification whose first call is about to be placed, its code hash already stored, and
-- schedule a look at it for when the placement must have resolved (a crash in between is noticed).
-- With mode "void" (the service knows the call was never placed, because storing failed): fail the
-- verification if it exists, else write it failed, so a create landing late cannot leave it pending.
-- KEYS: record, the shard's call schedule.
-- ARGV: now, mode, record ttl (ms), schedule member, placement deadline (ms), then field, value, ...
local v = load()
if ARGV[2] == 'create' then
  if v then
    if v.vd then return answer('voided') end
    return answer('created')  -- a retry of this create: the id is fresh, so the record is ours
  end
  redis.call('HSET', key, unpack(ARGV, 6))
  redis.call('PEXPIRE', key, ARGV[3])
  schedule(KEYS[2], ARGV[5], ARGV[4])
  return answer('created')
end
if not v then
  redis.call('HSET', key, unpack(ARGV, 6))
  redis.call('PEXPIRE', key, ARGV[3])
elseif v.st == 'pending' and v.ns == '1' and tonumber(v.ds) == 0 then
  drop_codes()
  redis.call('HSET', key, 'st', 'failed', 'vd', '1', 'ds', '1', 'dst', 'failed', 'drs', ARGV[5],
             'dua', ARGV[1], 'ua', ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[4])
end
return answer('voided')
