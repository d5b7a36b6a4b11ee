-- Store "expired" on a pending verification whose time has passed (the sweep; reads already show it),
-- so that it is recorded once and its event emitted once, whichever worker gets there first.
-- Answers 'expired', 'later' (its expiry moved; the sweep entry is moved with it) or 'ended'.
-- KEYS: record, the shard's expiry schedule.  ARGV: now, tenant ('').
local v = load()
local id = string.sub(key, #shard + 1)
if not v then
  redis.call('ZREM', KEYS[2], id)
  return {'ended'}
end
if v.st ~= 'pending' then
  redis.call('ZREM', KEYS[2], id)
  return {'ended'}
end
if now < at(v, v.ex) then
  schedule(KEYS[2], int(at(v, v.ex)), id)  -- followed to its new expiry, the set living at least as long
  return {'later'}
end
drop_codes()
redis.call('HSET', key, 'st', 'expired', 'ua', stamp(v))
redis.call('ZREM', KEYS[2], id)
return answer('expired')
