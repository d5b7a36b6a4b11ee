-- A call that never left no longer counts against its number's budget; remembered as given back, so
-- that its count landing later (a stalled server applying queued writes) is not counted either.
-- KEYS: the number's window set, its set of calls given back.  ARGV: call name, window (ms).
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
