-- Store the hash of a send's code, computed while the send's call was being placed (take_code says
-- which send takes it). Retrying is safe: a code already stored stays.
-- KEYS: record.
-- ARGV: now, tenant, send, the token of the request that began it ('' for send 1, which only its
--       create begins), packed hash, hash parameters.
local v = load()
if not v then return {'not_taken'} end
return {take_code(v, ARGV[3], ARGV[4], ARGV[5], ARGV[6])}
