-- Judge a reserved attempt: approve once if the code matched one still accepted, else count a wrong
-- code (the last allowed one ends the verification). The verdict is kept under the token, so a
-- retried request gets the same answer instead of spending another attempt.
-- KEYS: record.  ARGV: now, token, the send whose code matched ('' when none did).
local v = load()
if not v then return {'not_found'} end
local judged = v['j:' .. ARGV[2]]
if judged then return answer(judged) end
local reservation = 'r:' .. ARGV[2]
local st = status(v)
if st ~= 'pending' then
  redis.call('HDEL', key, reservation)
  return answer('not_pending', st)
end
if not v[reservation] then return {'released'} end
redis.call('HDEL', key, reservation)
local verdict = 'wrong'
if ARGV[3] ~= '' and (ARGV[3] == v.hs or ARGV[3] == v.ns) then
  verdict = 'approved'
  redis.call('HSET', key, 'st', 'approved')
  drop_codes()
elseif redis.call('HINCRBY', key, 'fl', 1) >= tonumber(v.ma) then
  verdict = 'max_attempts_reached'
  redis.call('HSET', key, 'st', 'max_attempts_reached')
  drop_codes()
end
redis.call('HSET', key, 'j:' .. ARGV[2], verdict, 'ua', ARGV[1])
return answer(verdict)
