-- Settle a claimed Idempotency-Key: keep the answer (mode 'keep') so repeats replay it, or let the
-- key go (mode 'release') so a repeat runs again. Only the claim's owner may settle it (a claim
-- whose lease ran out may belong to another request by now). A claim whose lease ran out with no
-- other request holding the key is kept all the same (written after a long storage outage, say):
-- a repeat must replay an answer that may have placed a call, not run again.
-- A release finding no claim (the request gave up while its claim was on its way: storage stalled)
-- leaves a mark for the lease, so that claim, landing later, takes nothing. A mark holds the key
-- for no one: another request's claim or answer goes over it. A release landing twice (retried
-- after a late reply) leaves its mark.
-- KEYS: the key's record.  ARGV: owner token, mode, status, body, keep for (ms; a release: the
-- lease), request fingerprint.
local st, ow = unpack(redis.call('HMGET', KEYS[1], 'st', 'ow'))
local marked = st == 'released'
if ow and ow ~= ARGV[1] and not marked then return 0 end
if ARGV[2] == 'release' then
  if marked and ow ~= ARGV[1] then return 0 end  -- another request's mark: nothing of ours is there
  if marked then return 1 end
  redis.call('DEL', KEYS[1])
  if not ow then
    redis.call('HSET', KEYS[1], 'st', 'released', 'ow', ARGV[1])
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
  end
  return 1
end
if marked and ow == ARGV[1] then return 0 end  -- this request gave the key up: it keeps nothing
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'st', 'done', 'status', ARGV[3], 'body', ARGV[4], 'fp', ARGV[6], 'ow', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
