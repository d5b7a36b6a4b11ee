-- A call's outcome, from its callback or its call report. A report about the call being placed (or
-- whose placement stayed unknown) proves it was placed. A report naming another call id than the
-- provider gave for this send, one about an older send, or one that would replace a final status
-- changes nothing.
-- KEYS: record, the shard's call schedule.
-- ARGV: now, tenant, send, call id in the report, status, provider's word, duration, member.
local v = load()
if not v then return {'not_found'} end
local ds = tonumber(v.ds)
local counted = false
if v.ns == ARGV[3] then
  counted = true
  promote(v)
  redis.call('HINCRBY', key, 'sn', 1)
  if tonumber(ARGV[3]) ~= ds then
    redis.call('HSET', key, 'ds', ARGV[3], 'dst', 'queued', 'dua', stamp(v))
    redis.call('HDEL', key, 'dci', 'dps', 'ddu', 'drs')
    ds, v.dst, v.dci = tonumber(ARGV[3]), 'queued', nil
  end
end
if tonumber(ARGV[3]) ~= ds then return answer('stale') end
if ARGV[4] ~= '' and v.dci and v.dci ~= '' and v.dci ~= ARGV[4] then return answer('foreign') end
if v.dst == 'unknown' and not counted then
  -- a send a resend gave way to as unknown, proved placed now: it counts (once: no longer unknown)
  redis.call('HINCRBY', key, 'sn', 1)
  redis.call('HSET', key, 'dst', 'calling')
  v.dst = 'calling'
end
if rank(ARGV[5]) <= rank(v.dst) then return answer('duplicate', v.dst) end
-- the verification changed too (its delivery is part of it): a client polling updated_at sees it
redis.call('HSET', key, 'dst', ARGV[5], 'dps', ARGV[6], 'dua', stamp(v), 'ua', stamp(v))
redis.call('HDEL', key, 'drs')
if ARGV[7] ~= '' then redis.call('HSET', key, 'ddu', ARGV[7]) end
if (not v.dci or v.dci == '') and ARGV[4] ~= '' then redis.call('HSET', key, 'dci', ARGV[4]) end
if rank(ARGV[5]) == 2 then redis.call('ZREM', KEYS[2], ARGV[8]) end
return answer('recorded')
