-- Begin a resend: check cooldown and budgets, store the new code's hash beside the current one (both
-- are accepted until the placement resolves), and schedule a look for when it must have resolved.
-- KEYS: record, the shard's call schedule.
-- ARGV: now, cooldown (ms), max sends, packed hash, hash parameters, code lifetime (ms),
--       placement deadline (ms), retention (ms), verification id.
local v = load()
if not v then return {'not_found'} end
local st = status(v)
if st ~= 'pending' then return {'not_pending', st} end
local live, soonest = live_reservations(v)
if tonumber(v.fl) + live >= tonumber(v.ma) then return {'in_flight', int(soonest)} end
if tonumber(v.sq) >= tonumber(ARGV[3]) then return {'max_sends'} end
if now < tonumber(v.ra) then return {'too_soon', v.ra} end
if v.ns then
  -- one placement at a time; a placement whose outcome stayed unknown gives way to the new one
  if v.ds ~= v.ns or v.dst ~= 'unknown' then return {'too_soon', int(now + 1000)} end
  promote(v)
end
local seq = int(tonumber(v.sq) + 1)
local expires = now + tonumber(ARGV[6])
redis.call('HSET', key, 'sq', seq, 'ra', int(now + tonumber(ARGV[2])), 'nc', ARGV[4], 'np', ARGV[5],
           'ns', seq, 'px', v.ex, 'pr', v.ra, 'ex', int(expires), 'ua', ARGV[1])
redis.call('PEXPIRE', key, int(expires - now + tonumber(ARGV[8])))
schedule(KEYS[2], ARGV[7], ARGV[9] .. '|' .. seq)
return {'begun', seq}
