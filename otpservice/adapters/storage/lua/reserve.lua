-- Reserve one attempt before any hash is checked, so parallel guesses can never exceed the limit.
-- The reservation is leased: one whose request never comes back is released when its lease ends.
-- Answers the codes accepted now: the current one and the one of a placement not yet resolved.
-- A retry with the same token gets the same reservation.
-- KEYS: record.  ARGV: now, token, code length, lease end (ms).
local v = load()
if not v then return {'not_found'} end
if v['x:' .. ARGV[2]] then return {'released'} end
local reservation = 'r:' .. ARGV[2]
if not v[reservation] then
  local st = status(v)
  if st ~= 'pending' then return {'not_pending', st} end
  if tonumber(ARGV[3]) ~= tonumber(v.cl) then return {'bad_length', v.cl} end
  local live, soonest = live_reservations(v)
  if tonumber(v.fl) + live >= tonumber(v.ma) then return {'in_flight', int(soonest)} end
  redis.call('HSET', key, reservation, ARGV[4])
end
return {'reserved', '', v.hs or '', v.hp or '', v.hc or '', v.ns or '', v.np or '', v.nc or ''}
