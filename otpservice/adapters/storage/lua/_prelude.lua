-- Prepended to every verification script. KEYS[1] is the verification's hash; ARGV[1] is "now" in
-- epoch milliseconds from the service's clock (never Redis's), so one clock rules expiry everywhere;
-- ARGV[2] is the tenant asking: a record of another tenant is answered as if it did not exist
-- ('' is the service itself: callbacks and the reconciler act for every tenant).
--
-- Record fields: st status, ph phone, cl code length, tt code lifetime (s), ca created (epoch ms), ua
-- updated, ex expires, fl wrong codes judged (absent: none), ma max attempts, sq sends begun, sn sends known placed,
-- ra resend available at, md metadata, tn tenant (absent: "default"), cc 1 when the tenant chose
-- the code, wh 1 when its tenant has a webhook, en events emitted; the current code hc/hp/hs (packed hash, argon2 parameters,
-- the send that carried it); the code of a send whose placement is unresolved nc/np/ns, with px/pr
-- the expiry and resend time to restore if it surely never left (copies of ex and ra), and bt the token that began it;
-- ht the token that began the current send while its code has not come yet (see promote). A
-- send's code hash may come after the send (store_code.lua writes it while the call is placed): until
-- then ns (or hs) is there without nc (or hc). The delivery ds (send), dst
-- (status), dci (call id), dps (provider's word), ddu (duration), drs (reason), dua (updated).
-- Every time but ca (ua, ex, ra, px, pr, dua) is kept as milliseconds after ca: a few bytes where a
-- 13-digit timestamp takes nine, so a pending verification stays within 400 bytes. Records written
-- before kept some of them as epoch milliseconds; at() reads both.
-- Per-request marks: r:<token> = lease end of a reserved, unjudged attempt, then ':' and the
-- unresolved send whose code it was reserved with ('' for none); j:<token> = the verdict
-- of a judged one (so a retried request gets the same answer); x:<token> = when a token was
-- released (a reservation landing later with it changes nothing).
local key = KEYS[1]
local now = tonumber(ARGV[1])
local tenant = ARGV[2]
-- Every key of a number lives in its verifications' shard (ids are drawn so that they do), so one
-- script can change a verification and its number's counters: otp:{sNN}:n:<e164>:<what>.
local shard = string.match(key, '^(.-}:)')
local TOMBSTONE_MS = 600000

-- Whole numbers as digits: Lua would write large ones as 1.7e+12.
local function int(n) return string.format('%.0f', n) end

-- A time as the record keeps it: milliseconds after its creation (see the field list above).
local function after_created(v, ms) return int(ms - tonumber(v.ca)) end

-- A time the record keeps, as epoch milliseconds (a value that large was written as one).
local EPOCH_MS_FLOOR = 1e12  -- September 2001: no verification lives that long after its creation
local function at(v, kept)
  local ms = tonumber(kept)
  if ms >= EPOCH_MS_FLOOR then return ms end
  return tonumber(v.ca) + ms
end

-- Now, as the record keeps it; never before its last change (ua, in either form): a storage clock
-- stepped back (a failover to a primary whose clock is behind) would otherwise write an updated_at
-- before created_at, or before the one it had.
local function stamp(v) return after_created(v, math.max(now, at(v, v.ua or '0'))) end

-- The record as load() first found it: the events a script emits report what changed since.
local before = nil
local touch  -- (defined below, once number_key is)

-- The record as a table of its fields, or nil when there is none.
local function load()
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local v = {}
  for i = 1, #flat, 2 do v[flat[i]] = flat[i + 1] end
  if tenant ~= '' and (v.tn or 'default') ~= tenant then return nil end
  if before == nil then
    before = {st = v.st, dst = v.dst, ds = v.ds}
    touch(v.ph, v.tn or 'default')
  end
  return v
end

-- Events, for tenants with a webhook (records marked wh): each is recorded in this same script, in
-- the shard's outbox (a hash of payloads by event id <id>:<n>) and its delivery schedule (a sorted
-- set), so a state change and its event are stored together or not at all.
local EVENT_KEEP_MS = 8 * 86400000
local SNAPSHOT = {st = 1, ph = 1, cl = 1, tt = 1, ca = 1, ua = 1, ex = 1, fl = 1, ma = 1, sn = 1, ra = 1,
                  md = 1, ds = 1, dst = 1, dci = 1, dps = 1, ddu = 1, drs = 1, dua = 1, tn = 1, cc = 1}
local DELIVERY_EVENTS = {calling = 1, answered = 1, no_answer = 1, busy = 1, congestion = 1,
                         invalid_number = 1, rejected = 1, error = 1, canceled = 1, failed = 1}
local STATUS_EVENTS = {approved = 1, max_attempts_reached = 1, canceled = 1, expired = 1, failed = 1}

local function emit(kind)
  local n = redis.call('HINCRBY', key, 'en', 1)
  local flat = redis.call('HGETALL', key)
  local fields = {}
  for i = 1, #flat, 2 do
    if SNAPSHOT[flat[i]] then fields[flat[i]] = flat[i + 1] end
  end
  local event = string.sub(key, #shard + 1) .. ':' .. n
  local outbox, schedule_key = shard .. 'outbox', shard .. 'deliveries'
  redis.call('HSET', outbox, event, cjson.encode({type = kind, at = now, fields = fields}))
  redis.call('ZADD', schedule_key, now, event)
  redis.call('PEXPIRE', outbox, EVENT_KEEP_MS)
  redis.call('PEXPIRE', schedule_key, EVENT_KEEP_MS)
end

-- Emit what this script changed: a new verification, a new delivery status, a new final status.
local function emit_changes()
  local now_st, now_dst, now_ds, marked = unpack(redis.call('HMGET', key, 'st', 'dst', 'ds', 'wh'))
  if marked ~= '1' or not now_st then return end
  if before == nil then
    if now_st == 'pending' then emit('verification.created') end
    return
  end
  if (now_dst ~= before.dst or now_ds ~= before.ds) and DELIVERY_EVENTS[now_dst] then
    emit('verification.delivery_updated')
  end
  if now_st ~= before.st and STATUS_EVENTS[now_st] then emit('verification.' .. now_st) end
end

local function owner(v) return v.tn or 'default' end

-- A key of one number: its calls log ('calls'), calls given back ('back'), and per tenant its
-- pending verification ('pending:<tenant>') and its wrong codes ('wrong:<tenant>').
local function number_key(phone, what) return shard .. 'n:' .. phone .. ':' .. what end

-- Every key of the shard a script may change, read once before it changes anything. While the
-- shard's Cluster slot moves to another node, a key not on this node any more fails the script
-- here, with nothing written, rather than half-way through (a record changed, its event lost).
-- Redis checks only the keys a script declares before running it; these are built in the script.
touch = function(phone, owner_tenant)
  redis.call('EXISTS', shard .. 'outbox', shard .. 'deliveries', shard .. 'expiry', shard .. 'calls',
             number_key(phone, 'calls'), number_key(phone, 'back'),
             number_key(phone, 'pending:' .. owner_tenant), number_key(phone, 'wrong:' .. owner_tenant))
end

-- A number's failure log for a tenant holds its judged wrong codes ('w:<token>') and the attempts
-- reserved but not judged yet ('r:<token>'), so parallel guesses cannot all slip under the lock.
local function failure_log(phone, owner_tenant) return number_key(phone, 'wrong:' .. owner_tenant) end

-- The failure lock: ms until it lifts (> 0); -1 when only attempts being checked right now fill it
-- (counted when `lease_ms` is given: reservations older than a lease are dead); 0 when open.
local function lock_state(phone, owner_tenant, lock, lease_ms)
  if #lock == 0 then return 0 end
  local entries = redis.call('ZRANGEBYSCORE', failure_log(phone, owner_tenant),
                             '(' .. int(now - longest(lock)), '+inf', 'WITHSCORES')
  local wait, busy = 0, false
  for i = 1, #lock, 2 do
    local count, span = tonumber(lock[i]), tonumber(lock[i + 1])
    local judged, live, nth = 0, 0, nil
    for j = #entries - 1, 1, -2 do  -- newest first
      local at = tonumber(entries[j + 1])
      if at > now - span then
        if string.sub(entries[j], 1, 2) == 'w:' then
          judged = judged + 1
          if judged == count then nth = at end
        elseif lease_ms and at > now - lease_ms then
          live = live + 1
        end
      end
    end
    if nth then
      wait = math.max(wait, nth + span - now, 1)
    elseif judged + live >= count then
      busy = true
    end
  end
  if wait > 0 then return wait end
  if busy then return -1 end
  return 0
end

-- A reply: a verdict, one detail, then the record's fields as they are now (the caller's view).
-- Every script that changes a record ends here (or calls emit_changes), so its events are recorded.
local function answer(verdict, detail)
  emit_changes()
  local reply = redis.call('HGETALL', key)
  table.insert(reply, 1, detail or '')
  table.insert(reply, 1, verdict)
  return reply
end

-- The status at `now`: a pending verification past its expiry is expired.
local function status(v)
  if v.st == 'pending' and now >= at(v, v.ex) then return 'expired' end
  return v.st
end

-- A verification that stops being pending accepts no code any more. (bt stays: a resend's request
-- that gave up still finds what it began, to give its budget back.)
local function drop_codes()
  redis.call('HDEL', key, 'hc', 'hp', 'hs', 'nc', 'np', 'ns', 'px', 'pr', 'ht')
end

-- The code of a send now known to be placed becomes the one current code.
-- The pending fields go before the current ones are written: a listpack keeps the allocation of
-- its largest moment, and both codes at once would leave every record 16+ bytes larger for good.
-- A callback may prove a call placed before its code's hash was stored (store_code.lua): the send
-- then becomes current without a code, and ht names the request whose write brings it. (Not bt
-- alone: the next resend's begin writes its own token there while this code may still be on its way.
-- bt stays too, for release.lua.)
local function promote(v)
  if v.nc then
    redis.call('HDEL', key, 'nc', 'np', 'ns', 'px', 'pr', 'bt', 'ht')
    redis.call('HSET', key, 'hc', v.nc, 'hp', v.np, 'hs', v.ns)
  else
    redis.call('HDEL', key, 'hc', 'hp', 'ns', 'px', 'pr', 'ht')
    redis.call('HSET', key, 'hs', v.ns)
    if v.bt then redis.call('HSET', key, 'ht', v.bt) end
  end
end

-- Store the hash of send `send`'s code, which that send was begun without (create.lua, begin_send.lua
-- mode 'later') by the request `token` ('' for send 1, which only its create begins), keeping `v` in
-- step. Only into that send while it is the unresolved one (nc), or the current one whose code has not
-- come yet (hc: a callback proved the call placed first). A verification that ended, a send undone
-- because its call never left, or a send begun again under the same number by another request takes
-- nothing: a late write can never bring back a dropped code. A code already stored stays.
local function take_code(v, send, token, packed, params)
  if v.st ~= 'pending' then return 'not_taken' end
  if v.ns == send then
    if send ~= '1' and v.bt ~= token then return 'not_taken' end
    if not v.nc then
      redis.call('HSET', key, 'nc', packed, 'np', params)
      v.nc, v.np = packed, params
    end
    return 'stored'
  end
  if v.hs == send and not v.hc then
    -- the request promote() named (records written before ht named it in bt alone)
    if send ~= '1' and (v.ht or v.bt) ~= token then return 'not_taken' end
    redis.call('HDEL', key, 'ht')
    v.ht = nil
    if v.bt == token then  -- no resend began since: its request is done with the record
      redis.call('HDEL', key, 'bt')
      v.bt = nil
    end
    redis.call('HSET', key, 'hc', packed, 'hp', params)
    v.hc, v.hp = packed, params
    return 'stored'
  end
  return 'not_taken'
end

-- Rank of a delivery status: a report of lower or equal rank never replaces the one recorded.
local function rank(s)
  if s == nil or s == '' or s == 'queued' then return 0 end
  if s == 'calling' or s == 'unknown' then return 1 end
  return 2
end

-- Attempts reserved and not judged yet; reservations whose lease ended are released on the way.
local function live_reservations(v)
  local live, soonest = 0, nil
  for field, value in pairs(v) do
    local kind = string.sub(field, 1, 2)
    if kind == 'r:' then
      local lease = tonumber(string.match(value, '^[^:]+'))
      if lease > now then
        live = live + 1
        if soonest == nil or lease < soonest then soonest = lease end
      else
        redis.call('HDEL', key, field)  -- its request never came back: the attempt returns
        redis.call('ZREM', failure_log(v.ph, owner(v)), field)
      end
    elseif kind == 'x:' and tonumber(value) + TOMBSTONE_MS < now then
      redis.call('HDEL', key, field)
    end
  end
  return live, soonest
end

-- Release the attempts in flight reserved with the code of send `seq`, just dropped (it surely never
-- left): judged now, they could approve it, under its number even once that number is reused.
-- Released, nothing is spent and the service asks for the code again. (A reservation written
-- before it named its send is released too.)
local function release_reservations(v, seq)
  for field, value in pairs(v) do
    if string.sub(field, 1, 2) == 'r:' then
      local send = string.match(value, ':(.*)$')
      if send == nil or send == seq then
        redis.call('HDEL', key, field)
        redis.call('ZREM', failure_log(v.ph, owner(v)), field)
      end
    end
  end
end

-- Put a member on one of the shard's schedules (calls, expiries); the schedule lives at least as long as the record.
local function schedule(schedule_key, at, member)
  redis.call('ZADD', schedule_key, at, member)
  local ttl = redis.call('PTTL', key)
  if ttl > 0 and redis.call('PTTL', schedule_key) < ttl then redis.call('PEXPIRE', schedule_key, ttl) end
end

-- Undo a begun resend that surely never left: its code goes, the expiry (and, when asked, the
-- cooldown and the send number) come back, and it leaves the schedule and (unless ``call`` is nil)
-- the number's budget. When the reconciler called it unknown meanwhile, the delivery shows this
-- send: it is described as ``delivery_status`` (``reason``) and its number stays taken, so that the
-- next resend is not taken for an unknown placement.
local function unbegin(v, seq, schedule_key, member, call, span, retention, give_back_cooldown,
                       delivery_status, reason)
  local settled = tonumber(v.ds) >= tonumber(seq)
  redis.call('HDEL', key, 'nc', 'np', 'ns', 'px', 'pr', 'bt')
  release_reservations(v, seq)
  local expires = at(v, v.px)
  redis.call('HSET', key, 'ex', v.px)
  redis.call('PEXPIRE', key, int(math.max(1, expires - now + retention)))
  -- the expiry moves back: so does the sweep's entry (it may have followed the resend's later one)
  schedule(shard .. 'expiry', int(expires), string.sub(key, #shard + 1))
  if give_back_cooldown then
    redis.call('HSET', key, 'ra', v.pr)
    if not settled and v.sq == seq then redis.call('HSET', key, 'sq', int(tonumber(v.sq) - 1)) end
  end
  if settled then
    redis.call('HSET', key, 'dst', delivery_status, 'drs', reason, 'dua', stamp(v), 'ua', stamp(v))
    redis.call('HDEL', key, 'dci', 'dps', 'ddu')
  end
  redis.call('ZREM', schedule_key, member)
  if call then budget_give_back(number_key(v.ph, 'calls'), number_key(v.ph, 'back'), call, now, span) end
end

