-- The provider took the call and named it: its code becomes the current one, the delivery says
-- "calling" (unless its callback already came), and the call is tracked until its outcome is known.
-- Answers what the verification had become meanwhile: placed, superseded, or not_pending + status.
-- The call's code may come along (its hash was computed after the provider took the call): it is
-- stored first, as store_code.lua would, so the code and the placement cost one round trip.
-- KEYS: record, the shard's call schedule.
-- ARGV: now, tenant, send, call id, code lifetime (ms), when to ask about the call, retention (ms),
--       member; optionally the code: the token of the request that began the send, packed hash,
--       hash parameters.
local v = load()
if not v then return {'not_found'} end
if ARGV[9] then take_code(v, ARGV[3], ARGV[9], ARGV[10], ARGV[11]) end
local seq = tonumber(ARGV[3])
local ds = tonumber(v.ds)
if seq > ds then
  redis.call('HSET', key, 'ds', ARGV[3], 'dst', 'calling', 'dci', ARGV[4], 'dua', stamp(v))
  redis.call('HDEL', key, 'dps', 'ddu', 'drs')
elseif seq == ds then
  if v.dci and v.dci ~= '' and v.dci ~= ARGV[4] then
    -- an early callback named another call: it does not describe this one
    redis.call('HSET', key, 'dst', 'calling', 'dci', ARGV[4], 'dua', stamp(v))
    redis.call('HDEL', key, 'dps', 'ddu', 'drs')
  elseif rank(v.dst) < 2 then
    redis.call('HSET', key, 'dst', 'calling', 'dci', ARGV[4], 'dua', stamp(v))
    redis.call('HDEL', key, 'drs')
  else
    redis.call('HSET', key, 'dci', ARGV[4])
  end
end
local pending = v.st == 'pending' and now < at(v, v.ex)
if v.ns == ARGV[3] then
  promote(v)
  redis.call('HINCRBY', key, 'sn', 1)
  if pending then
    local expires = now + tonumber(ARGV[5])
    redis.call('HSET', key, 'ex', after_created(v, expires))
    redis.call('PEXPIRE', key, int(expires - now + tonumber(ARGV[7])))
  end
elseif seq > ds or (seq == ds and v.dst == 'unknown') then
  -- known placed for the first time, though not the unresolved send any more: the verification
  -- ended while it was placed (its codes went), or a resend gave way to it as unknown
  redis.call('HINCRBY', key, 'sn', 1)
end
if tonumber(redis.call('HGET', key, 'ds')) == seq and rank(redis.call('HGET', key, 'dst')) < 2 then
  schedule(KEYS[2], ARGV[6], ARGV[8])
else
  redis.call('ZREM', KEYS[2], ARGV[8])
end
redis.call('HSET', key, 'ua', stamp(v))
if v.st ~= 'pending' then return answer('not_pending', v.st) end
if not pending then return answer('not_pending', 'expired') end
if tonumber(v.hs or 0) > seq or tonumber(v.ns or 0) > seq then return answer('superseded') end
return answer('placed')
