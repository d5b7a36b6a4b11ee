-- Claim an Idempotency-Key for one request, or answer what holds it: the request running under it,
-- or the answer it gave. KEYS: the key's record.  ARGV: request fingerprint, owner token, lease (ms).
-- Answers {'claimed'} or {state ('running'|'done'), fingerprint, status, body}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'st', 'running', 'fp', ARGV[1], 'ow', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'claimed'}
end
local r = redis.call('HMGET', KEYS[1], 'st', 'fp', 'status', 'body', 'ow')
-- this request's own claim, sent again (the client retries a script whose reply was late)
if r[1] == 'running' and r[5] == ARGV[2] then return {'claimed'} end
return {r[1], r[2], r[3] or '', r[4] or ''}
