-- A call that surely never left no longer counts against a budget (see budget_give_back).
-- KEYS: the budget's log, its set of calls given back.  ARGV: call name, longest window (ms).
budget_give_back(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))
return 1
