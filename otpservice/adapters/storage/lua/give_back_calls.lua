-- A call that surely never left no longer counts against a budget (see budget_give_back).
-- KEYS: the budget's log, its log of calls given back.  ARGV: now, call name, longest window (ms).
budget_give_back(KEYS[1], KEYS[2], ARGV[2], tonumber(ARGV[1]), tonumber(ARGV[3]))
return 1
