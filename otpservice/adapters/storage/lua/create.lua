-- Create a verification whose first call is about to be placed, and schedule a look at it for when
-- the placement must have resolved (a crash in between is noticed). Its code's hash comes with it, or
-- (without nc/np among the fields) while the call is placed, through store_code.lua.
-- In the same step: refuse while the number is locked for this tenant (too many wrong codes), answer
-- the tenant's pending verification of the number instead of starting a second one, and take the
-- call from the number's budget. The number's pending index names the verification created.
-- With mode "void" (the service knows the call was never placed: storing failed, or another budget
-- refused it): fail the verification if it exists, else write it failed, so a create landing late
-- cannot leave it pending; its index entry and its budget count go too.
-- On one server (not a Cluster, where each budget has a slot of its own) the call's other budgets
-- (a client address, a number range, the tenant's day, everything) are taken here first, in the
-- order the service lists them: any refusal, or a lock, a pending verification or the number's
-- budget refusing afterwards, untakes what this script took.
-- KEYS: record, the shard's call schedule, then each other budget's log and log of calls given back.
-- ARGV: now, tenant, mode, record ttl (ms), schedule member, placement deadline (ms) (mode void:
--       the reason), verification id, phone (E.164), the call's budget name, failure lock limits,
--       number limits (each a limit list), how many other budgets, each one's limit list, then
--       field, value, ...
local id, phone, call = ARGV[7], ARGV[8], ARGV[9]
local lock, i = limits_at(ARGV, 10)
local number_limits
number_limits, i = limits_at(ARGV, i)
local budgets, first_field = budgets_at(ARGV, i, 3)
local pending_key = number_key(phone, 'pending:' .. tenant)
touch(phone, tenant)
local v = load()

if ARGV[3] == 'create' then
  if v then
    if v.vd then return answer('voided') end
    return answer('created')  -- a retry of this create: the id is fresh, so the record is ours
  end
  local refused = take_budgets(budgets, call, now)
  if refused then return refused end
  local wait = lock_state(phone, tenant, lock)
  if wait > 0 then
    untake_budgets(budgets, call)
    return {'locked', int(now + wait)}
  end
  local other = redis.call('GET', pending_key)
  if other and other ~= id then
    local record = shard .. other
    local st, created, expires = unpack(redis.call('HMGET', record, 'st', 'ca', 'ex'))
    if st == 'pending' and now < at({ca = created}, expires) then
      untake_budgets(budgets, call)
      local reply = redis.call('HGETALL', record)
      table.insert(reply, 1, other)
      table.insert(reply, 1, 'existing')
      return reply
    end
  end
  wait = budget_take(number_key(phone, 'calls'), number_key(phone, 'back'), call, now, number_limits)
  if wait > 0 then
    untake_budgets(budgets, call)
    return {'phone_limited', int(wait)}
  end
  redis.call('HSET', key, unpack(ARGV, first_field))
  redis.call('PEXPIRE', key, ARGV[4])
  redis.call('SET', pending_key, id, 'PX', ARGV[4])
  schedule(KEYS[2], ARGV[6], ARGV[5])
  -- the expiry sweep's entry: a later expiry is followed by the sweep, an earlier one by unbegin
  local created, expires = unpack(redis.call('HMGET', key, 'ca', 'ex'))
  schedule(shard .. 'expiry', int(at({ca = created}, expires)), id)
  return answer('created')
end
if not v then
  redis.call('HSET', key, unpack(ARGV, first_field))
  redis.call('PEXPIRE', key, ARGV[4])
elseif v.st == 'pending' and v.ns == '1' then
  -- (also when the reconciler already called its placement unknown: this service knows it never left)
  drop_codes()
  -- (one whose time ran out first ended by expiring)
  redis.call('HSET', key, 'st', status(v) == 'expired' and 'expired' or 'failed', 'vd', '1', 'ds', '1',
             'dst', 'failed', 'drs', ARGV[6],
             'dua', stamp(v), 'ua', stamp(v))
  redis.call('ZREM', KEYS[2], ARGV[5])
end
-- a verification still pending (a callback proved its first call placed after all) keeps the index
if redis.call('GET', pending_key) == id and redis.call('HGET', key, 'st') ~= 'pending' then
  redis.call('DEL', pending_key)
end
budget_give_back(number_key(phone, 'calls'), number_key(phone, 'back'), call, now, longest(number_limits))
return answer('voided')
