-- Reserve one attempt before any hash is checked, so parallel guesses can never exceed the limit.
-- The reservation is leased: one whose request never comes back is released when its lease ends.
-- Answers the codes accepted now: the current one and the one of a placement not yet resolved.
-- A retry with the same token gets the same reservation.
-- A call's code hash is stored while that call is being placed (store_code.lua), before the
-- placement is recorded. A callee cannot hear a code before the provider has taken its call, so a
-- check normally finds every accepted code. One that does not (a write still being repaired after a
-- storage failure, perhaps of the current send while a newer one is being placed, or lost with a
-- process that died placing the call: a resend brings a new code) is answered 'code_pending':
-- nothing is reserved or spent, and the code can be sent again. Judging it against the codes there
-- are would count a right code as wrong.
-- Refused while the number is locked for the tenant (too many wrong codes across its verifications);
-- the attempt is logged in the number's failure log until judged, so parallel guesses count too.
-- KEYS: record.  ARGV: now, tenant, token, code length, lease end (ms), failure lock limits.
local v = load()
if not v then return {'not_found'} end
if v['x:' .. ARGV[3]] then return {'released'} end
local reservation = 'r:' .. ARGV[3]
if not v[reservation] then
  local st = status(v)
  if st ~= 'pending' then return {'not_pending', st} end
  if tonumber(ARGV[4]) ~= tonumber(v.cl) then return {'bad_length', v.cl} end
  -- every code accepted now must be there: one still on its way may be the code typed
  if (v.ns and not v.nc) or (v.hs and not v.hc) or not (v.hc or v.nc) then return {'code_pending'} end
  local lock = limits_at(ARGV, 6)
  local lease_ms = tonumber(ARGV[5]) - now
  local wait = lock_state(v.ph, owner(v), lock, lease_ms)
  if wait > 0 then return {'locked', int(now + wait)} end
  if wait < 0 then return {'in_flight', ARGV[5]} end
  local live, soonest = live_reservations(v)
  if tonumber(v.fl or 0) + live >= tonumber(v.ma) then return {'in_flight', int(soonest)} end
  redis.call('HSET', key, reservation, ARGV[5] .. ':' .. (v.ns or ''))
  if #lock > 0 then window_add(failure_log(v.ph, owner(v)), reservation, now, longest(lock)) end
end
return {'reserved', '', v.hs or '', v.hp or '', v.hc or '', v.ns or '', v.np or '', v.nc or ''}
