-- Prepended to every script: sliding-window logs. A log is a sorted set of named events scored by
-- when they happened (epoch ms); a limit list is flat: count, window (ms), count, window, ...

-- Milliseconds until one more event fits every limit of the list at `at` (0: it fits now).
local function window_wait(log, at, limits)
  local wait = 0
  for i = 1, #limits, 2 do
    local count, span = tonumber(limits[i]), tonumber(limits[i + 1])
    if redis.call('ZCOUNT', log, '(' .. string.format('%.0f', at - span), '+inf') >= count then
      -- the count-th newest event in the window must age out before another fits
      local nth = redis.call('ZREVRANGE', log, count - 1, count - 1, 'WITHSCORES')
      wait = math.max(wait, tonumber(nth[2]) + span - at, 1)
    end
  end
  return wait
end

-- The longest window of a limit list (ms), which is how long its log must remember an event.
local function longest(limits)
  local span = 1000
  for i = 2, #limits, 2 do span = math.max(span, tonumber(limits[i])) end
  return span
end

-- Record event `name` at `at`, forgetting what no window of the list can see any more.
local function window_add(log, name, at, span)
  redis.call('ZADD', log, at, name)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', string.format('%.0f', at - span))
  redis.call('PEXPIRE', log, string.format('%.0f', span))
end

-- Take one named call from a budget: 0 when it may go (also when this name was already counted,
-- or was given back before its count landed), else the milliseconds until it could.
-- `back` is the budget's log of calls given back (calls that surely never left).
local function budget_take(log, back, name, at, limits)
  if redis.call('ZSCORE', log, name) then return 0 end
  if redis.call('ZSCORE', back, name) then return 0 end
  local wait = window_wait(log, at, limits)
  if wait > 0 then return wait end
  window_add(log, name, at, longest(limits))
  return 0
end

-- A call that surely never left no longer counts; remembered as long as the budget could count it,
-- so a count landing later is void too.
local function budget_give_back(log, back, name, at, span)
  redis.call('ZREM', log, name)
  window_add(back, name, at, span)
end

-- Limit lists travel as: how many numbers follow, then the numbers. Answers the list and the index
-- of the argument after it.
local function limits_at(args, i)
  local n = tonumber(args[i])
  local limits = {}
  for j = 1, n do limits[j] = args[i + j] end
  return limits, i + n + 1
end

-- A call's other budgets, as the scripts that take them in the same step get them (one server, not a
-- Cluster: see create.lua): ARGV from `i` on says how many, then each one's limit list; their keys
-- are KEYS from `first_key` on, a log and a log of calls given back each. Answers the budgets and
-- the index of the argument after them.
local function budgets_at(args, i, first_key)
  local budgets = {}
  local count = tonumber(args[i])
  i = i + 1
  for b = 1, count do
    local limits
    limits, i = limits_at(args, i)
    budgets[b] = {log = KEYS[first_key + 2 * b - 2], back = KEYS[first_key + 2 * b - 1], limits = limits}
  end
  return budgets, i
end

-- Undo a take of call `name` from every budget, when the script that took it refuses. Not
-- budget_give_back: the call is not remembered as given back, so a retry of the same request, once
-- the refusal's cause is gone, is counted like any new call (a name in `back` passes uncounted).
local function untake_budgets(budgets, name)
  for _, budget in ipairs(budgets) do redis.call('ZREM', budget.log, name) end
end

-- Take call `name` from every budget; when any refuses, untake the others and answer
-- {'budget_refused', wait of each budget (ms, 0: allowed)}, else nil.
local function take_budgets(budgets, name, at)
  local waits, refused = {'budget_refused'}, false
  for b, budget in ipairs(budgets) do
    waits[b + 1] = budget_take(budget.log, budget.back, name, at, budget.limits)
    refused = refused or waits[b + 1] > 0
  end
  if not refused then return nil end
  untake_budgets(budgets, name)
  return waits
end
