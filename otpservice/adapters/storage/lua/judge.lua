-- Judge a reserved attempt: approve once if the code matched one accepted when it was reserved, else
-- count a wrong code (the last allowed one ends the verification). Accepted then: the current send's
-- code, the unresolved one's, or an older placed one's that a newer placement replaced meanwhile
-- (the check began while it was good). A send that surely never left loses its code, and its number
-- may be reused: that releases the reservations in flight made with its code (unbegin), so none is
-- judged here against a dropped code. The verdict is kept under the token, so a retried request
-- gets the same answer instead of spending another attempt.
-- A wrong code also counts towards the number's failure lock for the tenant.
-- KEYS: record.  ARGV: now, tenant, token, the send whose code matched ('' when none did),
--       failure lock limits.
local v = load()
if not v then return {'not_found'} end
local judged = v['j:' .. ARGV[3]]
if judged then return answer(judged) end
local reservation = 'r:' .. ARGV[3]
local st = status(v)
local log = failure_log(v.ph, owner(v))
redis.call('ZREM', log, reservation)
if st ~= 'pending' then
  redis.call('HDEL', key, reservation)
  return answer('not_pending', st)
end
if not v[reservation] then return {'released'} end
redis.call('HDEL', key, reservation)
local verdict = 'wrong'
local matched = tonumber(ARGV[4])
if matched and (ARGV[4] == v.ns or (v.hs and matched <= tonumber(v.hs))) then
  verdict = 'approved'
  redis.call('HSET', key, 'st', 'approved')
  drop_codes()
elseif redis.call('HINCRBY', key, 'fl', 1) >= tonumber(v.ma) then
  verdict = 'max_attempts_reached'
  redis.call('HSET', key, 'st', 'max_attempts_reached')
  drop_codes()
end
if verdict ~= 'approved' then
  local lock = limits_at(ARGV, 5)
  if #lock > 0 then window_add(log, 'w:' .. ARGV[3], now, longest(lock)) end
end
redis.call('HSET', key, 'j:' .. ARGV[3], verdict, 'ua', stamp(v))
return answer(verdict)
