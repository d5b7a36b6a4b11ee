-- Nobody can say whether the provider placed the call (it did not answer in time, answered
-- something unreadable, or the process died before recording it). Its code stays accepted; the
-- delivery says "unknown"; a callback about the call can still settle it.
-- KEYS: record, the shard's call schedule.
-- ARGV: now, tenant, send, reason, member.
local v = load()
if not v then return {'not_found'} end
local function describe_unknown()
  redis.call('HSET', key, 'ds', ARGV[3], 'dst', 'unknown', 'drs', ARGV[4], 'dua', stamp(v), 'ua', stamp(v))
  redis.call('HDEL', key, 'dci', 'dps', 'ddu')
end
if v.ns ~= ARGV[3] then
  -- resolved meanwhile (its resolver owns the schedule entry), or the verification ended first
  if not v.ns and tonumber(v.ds) < tonumber(ARGV[3]) then
    -- An ended verification's delivery, still describing an earlier send (or none), says this
    -- call's fate is unknown; not a pending one's (a send known never to have left gave way to the
    -- delivery it shows), nor a send known never to have left (no longer counted as begun, or
    -- taken off the schedule by its resolver: a release, a provider's refusal).
    if status(v) ~= 'pending' and tonumber(v.sq) >= tonumber(ARGV[3])
        and redis.call('ZSCORE', KEYS[2], ARGV[5]) then
      describe_unknown()
    end
    redis.call('ZREM', KEYS[2], ARGV[5])
  end
  return answer('ignored')
end
if tonumber(v.ds) < tonumber(ARGV[3]) then describe_unknown() end
redis.call('ZREM', KEYS[2], ARGV[5])
return answer('unknown')
