-- Take one named call from a sliding-window budget (a client address, a number range, a tenant's
-- day, everything). Answers 0 when the call may go, else the milliseconds until it could.
-- KEYS: the budget's log, its log of calls given back.
-- ARGV: now, call name, then the limit list (its length, then count, window (ms), ...).
local limits = limits_at(ARGV, 3)
return budget_take(KEYS[1], KEYS[2], ARGV[2], tonumber(ARGV[1]), limits)
