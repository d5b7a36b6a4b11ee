-- Begin a resend: check the cooldown, the failure lock and the number's budget, and schedule a look
-- for when its placement must have resolved. The new code's hash comes with it (mode 'hash'), while
-- the call is placed (mode 'later': store_code.lua writes it), or is the current code again (mode
-- 'same': a code the tenant chose). Until the placement resolves both codes are accepted.
-- On one server (not a Cluster) the call's other budgets are taken here too, as create.lua does:
-- first, and untaken on any later refusal.
-- KEYS: record, the shard's call schedule, then each other budget's log and log of calls given back.
-- ARGV: now, tenant, cooldown (ms), max sends, code mode, packed hash, hash parameters (both '' but
--       in mode 'hash'), code lifetime (ms), placement deadline (ms), retention (ms), verification
--       id, request token (the call is <id>:<token> in the budgets), failure lock limits, number
--       limits (limit lists), how many other budgets, each one's limit list.
-- A send whose request gave up is voided by token (x:<token>): landing late, it begins nothing.
local v = load()
if not v then return {'not_found'} end
local st = status(v)
if st ~= 'pending' then return {'not_pending', st} end
local mode, id, token = ARGV[5], ARGV[11], ARGV[12]
local call = id .. ':' .. token
local lock, i = limits_at(ARGV, 13)
local number_limits
number_limits, i = limits_at(ARGV, i)
local budgets = budgets_at(ARGV, i, 3)
if v.bt == token and v.ns then return {'begun', v.ns} end  -- a retry of this begin
if v['x:' .. token] then return {'voided'} end
local refused_by_budget = take_budgets(budgets, call, now)
if refused_by_budget then return refused_by_budget end

-- A refusal after the budgets were taken untakes them.
local function refuse(reply)
  untake_budgets(budgets, call)
  return reply
end

local wait = lock_state(v.ph, owner(v), lock)
if wait > 0 then return refuse({'locked', int(now + wait)}) end
local live, soonest = live_reservations(v)
if tonumber(v.fl or 0) + live >= tonumber(v.ma) then return refuse({'in_flight', int(soonest)}) end
if tonumber(v.sq) >= tonumber(ARGV[4]) then return refuse({'max_sends'}) end
if now < at(v, v.ra) then return refuse({'too_soon', int(at(v, v.ra))}) end
-- one placement at a time; a placement whose outcome stayed unknown gives way to the new one
if v.ns and (v.ds ~= v.ns or v.dst ~= 'unknown') then return refuse({'too_soon', int(now + 1000)}) end
-- the code said again is the newest one; its hash may still be on its way (store_code.lua)
local same_packed, same_params = v.hc, v.hp
if v.ns then same_packed, same_params = v.nc, v.np end
if mode == 'same' and not same_packed then return refuse({'too_soon', int(now + 1000)}) end
wait = budget_take(number_key(v.ph, 'calls'), number_key(v.ph, 'back'), call, now, number_limits)
if wait > 0 then return refuse({'phone_limited', int(wait)}) end
if v.ns then
  if v.nc then
    promote(v)
  else
    -- An unknown placement whose code never came cannot be checked, and making it current would
    -- drop the current code, maybe the one heard: it is let go (its call stays counted).
    redis.call('HDEL', key, 'ns', 'px', 'pr')
  end
end
local seq = int(tonumber(v.sq) + 1)
local expires = now + tonumber(ARGV[8])
local ttl = int(expires - now + tonumber(ARGV[10]))
local fields = {'sq', seq, 'ra', after_created(v, now + tonumber(ARGV[3])), 'ns', seq, 'px', v.ex,
                'pr', v.ra, 'bt', token, 'ex', after_created(v, expires), 'ua', stamp(v)}
local packed, params = ARGV[6], ARGV[7]
if mode == 'same' then packed, params = same_packed, same_params end
if mode ~= 'later' then
  table.insert(fields, 'nc')
  table.insert(fields, packed)
  table.insert(fields, 'np')
  table.insert(fields, params)
end
redis.call('HSET', key, unpack(fields))
redis.call('PEXPIRE', key, ttl)
local pending_key = number_key(v.ph, 'pending:' .. owner(v))
if redis.call('GET', pending_key) == id then redis.call('PEXPIRE', pending_key, ttl) end
schedule(KEYS[2], ARGV[9], id .. '|' .. seq)
return {'begun', seq}
