-- Begin a resend: check the cooldown, the failure lock and the number's budget, store the new code's
-- hash beside the current one (both are accepted until the placement resolves), and schedule a look
-- for when it must have resolved. An empty hash means "the same code again" (a code the tenant chose).
-- KEYS: record, the shard's call schedule.
-- ARGV: now, tenant, cooldown (ms), max sends, packed hash, hash parameters, code lifetime (ms),
--       placement deadline (ms), retention (ms), verification id, request token (the call is
--       <id>:<token> in the budgets), failure lock limits, number limits (limit lists).
-- A send whose request gave up is voided by token (x:<token>): landing late, it begins nothing.
local v = load()
if not v then return {'not_found'} end
local st = status(v)
if st ~= 'pending' then return {'not_pending', st} end
local lock, i = limits_at(ARGV, 12)
local number_limits = limits_at(ARGV, i)
if v.bt == ARGV[11] and v.ns then return {'begun', v.ns} end  -- a retry of this begin
if v['x:' .. ARGV[11]] then return {'voided'} end
local wait = lock_state(v.ph, owner(v), lock)
if wait > 0 then return {'locked', int(now + wait)} end
local live, soonest = live_reservations(v)
if tonumber(v.fl or 0) + live >= tonumber(v.ma) then return {'in_flight', int(soonest)} end
if tonumber(v.sq) >= tonumber(ARGV[4]) then return {'max_sends'} end
if now < tonumber(v.ra) then return {'too_soon', v.ra} end
-- one placement at a time; a placement whose outcome stayed unknown gives way to the new one
if v.ns and (v.ds ~= v.ns or v.dst ~= 'unknown') then return {'too_soon', int(now + 1000)} end
wait = budget_take(number_key(v.ph, 'calls'), number_key(v.ph, 'back'), ARGV[10] .. ':' .. ARGV[11], now,
                   number_limits)
if wait > 0 then return {'phone_limited', int(wait)} end
if v.ns then
  promote(v)
  v.hc, v.hp = v.nc, v.np
end
local seq = int(tonumber(v.sq) + 1)
local packed, params = ARGV[5], ARGV[6]
if packed == '' then packed, params = v.hc, v.hp end
local expires = now + tonumber(ARGV[7])
local ttl = int(expires - now + tonumber(ARGV[9]))
redis.call('HSET', key, 'sq', seq, 'ra', int(now + tonumber(ARGV[3])), 'nc', packed, 'np', params,
           'ns', seq, 'px', v.ex, 'pr', v.ra, 'bt', ARGV[11], 'ex', int(expires), 'ua', stamp(v))
redis.call('PEXPIRE', key, ttl)
local pending_key = number_key(v.ph, 'pending:' .. owner(v))
if redis.call('GET', pending_key) == ARGV[10] then redis.call('PEXPIRE', pending_key, ttl) end
schedule(KEYS[2], ARGV[8], ARGV[10] .. '|' .. seq)
return {'begun', seq}
