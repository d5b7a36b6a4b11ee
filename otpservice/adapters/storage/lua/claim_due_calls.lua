-- Lease the due calls of one shard's schedule to the caller: pushing their score to the lease end
-- hides them from other workers; one that dies mid-way loses nothing, the calls come due again.
-- KEYS: the shard's call schedule.  ARGV: now, how many at most, lease end (ms).
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], member) end
return due
