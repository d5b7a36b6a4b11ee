-- A call that surely never left (refused by the provider, or never sent): its code is dropped. The
-- first call's failure fails the verification; a resend's restores the expiry, and the cooldown and
-- send when asked to (a request that never reached the provider should cost nothing).
-- KEYS: record, the shard's call schedule.
-- ARGV: now, send, delivery status, reason, give back cooldown (1/0), describe in delivery (1/0),
--       member, retention (ms).
local v = load()
if not v then return {'not_found'} end
if v.ns ~= ARGV[2] then return answer('ignored') end
redis.call('ZREM', KEYS[2], ARGV[7])
local describe = ARGV[6] == '1'
if ARGV[2] == '1' then
  drop_codes()
  if v.st == 'pending' then redis.call('HSET', key, 'st', 'failed') end
  describe = true
else
  redis.call('HDEL', key, 'nc', 'np', 'ns', 'px', 'pr')
  redis.call('HSET', key, 'ex', v.px)
  redis.call('PEXPIRE', key, int(math.max(1, tonumber(v.px) - now + tonumber(ARGV[8]))))
  if ARGV[5] == '1' then
    redis.call('HSET', key, 'ra', v.pr)
    if v.sq == ARGV[2] then redis.call('HSET', key, 'sq', int(tonumber(v.sq) - 1)) end
  end
end
if describe then
  redis.call('HSET', key, 'ds', ARGV[2], 'dst', ARGV[3], 'drs', ARGV[4], 'dua', ARGV[1])
  redis.call('HDEL', key, 'dci', 'dps', 'ddu')
end
redis.call('HSET', key, 'ua', ARGV[1])
return answer('unplaced')
