-- Count one call to a number in its budget window, named so that a retry counts it once and a call
-- that never left can be given back. Answers 1 when the call may go, 0 when the budget is spent.
-- A call given back before this lands (a stalled server applying queued writes) is not counted.
-- KEYS: the number's window set, its set of calls given back.  ARGV: limit, call name, window (ms).
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 1 then return 1 end
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
