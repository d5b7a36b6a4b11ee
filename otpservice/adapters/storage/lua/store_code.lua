-- Store the hash of a send's code, computed while the send's call was being placed (the send was
-- begun without it: create.lua, begin_send.lua mode 'later'). Only into that send, while it is the
-- unresolved one (nc), or the current one whose code has not come yet (hc: a callback proved the
-- call placed first). A verification that ended, a send undone because its call never left, or a
-- send begun again under the same number by another request takes nothing: a late write can never
-- bring back a dropped code. Retrying is safe: a code already stored stays.
-- KEYS: record.
-- ARGV: now, tenant, send, the token of the request that began it ('' for send 1, which only its
--       create begins), packed hash, hash parameters.
local v = load()
if not v or v.st ~= 'pending' then return {'not_taken'} end
local send, token = ARGV[3], ARGV[4]
if send ~= '1' and v.bt ~= token then return {'not_taken'} end
if v.ns == send then
  if not v.nc then redis.call('HSET', key, 'nc', ARGV[5], 'np', ARGV[6]) end
  return {'stored'}
end
if v.hs == send and not v.hc then
  if send ~= '1' then redis.call('HDEL', key, 'bt') end  -- it named this request (see promote)
  redis.call('HSET', key, 'hc', ARGV[5], 'hp', ARGV[6])
  return {'stored'}
end
return {'not_taken'}
