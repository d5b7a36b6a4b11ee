-- Claim an Idempotency-Key for one request, or answer what holds it: the request running under it,
-- or the answer it gave. KEYS: the key's record.  ARGV: request fingerprint, owner token, lease (ms).
-- Answers {'claimed'}, {'released'} (this request gave the key up before its claim landed), or
-- {state ('running'|'done'), fingerprint, status, body, ms the record is still held (PTTL)}.
local r = redis.call('HMGET', KEYS[1], 'st', 'fp', 'status', 'body', 'ow')
if r[1] == 'released' and r[5] == ARGV[2] then return {'released'} end
if not r[1] or r[1] == 'released' then  -- free, or only another request's give-up mark
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'st', 'running', 'fp', ARGV[1], 'ow', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'claimed'}
end
-- this request's own claim, sent again (the client retries a script whose reply was late)
if r[1] == 'running' and r[5] == ARGV[2] then return {'claimed'} end
return {r[1], r[2], r[3] or '', r[4] or '', redis.call('PTTL', KEYS[1])}
