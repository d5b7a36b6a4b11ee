-- A call that surely never left (refused by the provider, or never sent): its code is dropped. The
-- first call's failure fails the verification; a resend's restores the expiry, and the cooldown and
-- send when asked to (a request that never reached the provider should cost nothing). The call no
-- longer counts against the number's budget, and a failed verification leaves the number's index.
-- KEYS: record, the shard's call schedule.
-- ARGV: now, tenant, send, delivery status, reason, give back cooldown (1/0), describe in delivery (1/0),
--       member, retention (ms), verification id, the call's budget name, the number budget's
--       longest window (ms), keep the call counted (1/0: its code was lost, but it may have rung).
local v = load()
if not v then return {'not_found'} end
-- the call to give back to the number's budget; none when it stays counted
local call = ARGV[11]
if ARGV[13] == '1' then call = nil end
local function give_back()
  if call then
    budget_give_back(number_key(v.ph, 'calls'), number_key(v.ph, 'back'), call, now, tonumber(ARGV[12]))
  end
end
-- A resend's number is given back when it is undone, and the next resend begins under it again:
-- the send is the one this call began only if its request (bt, in the call's name) began it. A
-- write repeated after its first landing (a retry after a lost reply) must not undo the next one.
local another = ARGV[3] ~= '1' and v.ns == ARGV[3] and ARGV[11] ~= ARGV[10] .. ':' .. (v.bt or '')
if v.ns ~= ARGV[3] or another then
  -- the verification ended while the call was being placed: its schedule entry goes (unless the
  -- number was reused by a send since placed, whose entry it is now)
  if not v.ns and tonumber(v.ds) < tonumber(ARGV[3]) then
    redis.call('ZREM', KEYS[2], ARGV[8])
  end
  if not v.ns or another then give_back() end  -- (a repeat: giving back is by name, once)
  return answer('ignored')
end
local describe = ARGV[7] == '1'
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[8])
  give_back()
  drop_codes()
  -- (a verification whose time ran out first ended by expiring, whatever its call did)
  if v.st == 'pending' then redis.call('HSET', key, 'st', status(v) == 'expired' and 'expired' or 'failed') end
  local pending_key = number_key(v.ph, 'pending:' .. owner(v))
  if redis.call('GET', pending_key) == ARGV[10] then redis.call('DEL', pending_key) end
  describe = true
else
  unbegin(v, ARGV[3], KEYS[2], ARGV[8], call, tonumber(ARGV[12]), tonumber(ARGV[9]), ARGV[6] == '1',
          ARGV[4], ARGV[5])
end
if describe then
  redis.call('HSET', key, 'ds', ARGV[3], 'dst', ARGV[4], 'drs', ARGV[5], 'dua', stamp(v))
  redis.call('HDEL', key, 'dci', 'dps', 'ddu')
end
redis.call('HSET', key, 'ua', stamp(v))
return answer('unplaced')
