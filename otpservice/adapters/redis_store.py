"""Verifications in Redis: one hash per verification, every move applied by one atomic Lua script.

Why scripts: a check-then-write from Python would let parallel requests slip between the check and
the write. Each script reads and writes the hash in one step, so 200 parallel guesses reserve at
most ``max_attempts`` attempts and a code is approved once. "Now" is passed in from the service's
clock, never read from Redis's, so one clock rules expiry everywhere.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from otpservice.domain.clock import from_millis, to_millis
from otpservice.domain.codes import SALT_BYTES
from otpservice.domain.verification import Delivery, DeliveryStatus, Verification, VerificationStatus

KEY_PREFIX = "otp:v:"
# Calls placed whose outcome is not known yet, scored by when to ask the provider about them.
OPEN_CALLS_KEY = "otp:open-calls"
# Calls per number per window, for the toll-fraud budget.
PHONE_BUDGET_PREFIX = "otp:phone-calls:"

# Shared Lua: the rank of a delivery status; a report of lower or equal rank changes nothing.
_RANK = """
local function rank(s)
  if s == 'queued' or s == false or s == nil or s == '' then return 0 end
  if s == 'calling' then return 1 end
  return 2
end
"""

_RESERVE_ATTEMPT = """
local v = redis.call('HMGET', KEYS[1], 'status', 'expires', 'attempts', 'max_attempts', 'code_length',
                     'code_hash', 'gen', 'hash_params')
if not v[1] then return {'not_found'} end
if v[1] ~= 'pending' then return {'not_pending', v[1]} end
if tonumber(ARGV[1]) >= tonumber(v[2]) then return {'not_pending', 'expired'} end
if tonumber(ARGV[2]) ~= tonumber(v[5]) then return {'bad_length', v[5]} end
if tonumber(v[3]) >= tonumber(v[4]) then return {'no_attempts_left'} end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'updated', ARGV[1])
-- before its first call is placed a verification has no code yet: any guess is simply wrong
return {'reserved', tostring(n), v[6] or '', v[7], v[8] or ''}
"""

_RECORD_RESULT = """
local v = redis.call('HMGET', KEYS[1], 'status', 'gen', 'max_attempts', 'expires')
if not v[1] then return {'not_found'} end
if v[1] ~= 'pending' then return {'not_pending', v[1]} end
-- the hash check takes time: a code that was right only after expiry is not accepted
if tonumber(ARGV[1]) >= tonumber(v[4]) then return {'not_pending', 'expired'} end
if ARGV[3] == '1' and v[2] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'status', 'approved', 'updated', ARGV[1])
  redis.call('HDEL', KEYS[1], 'code_hash', 'hash_params')
  return {'approved'}
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(v[3]) then
  redis.call('HSET', KEYS[1], 'status', 'max_attempts_reached', 'updated', ARGV[1])
  redis.call('HDEL', KEYS[1], 'code_hash', 'hash_params')
  return {'max_attempts_reached'}
end
return {'wrong'}
"""

_BEGIN_SEND = """
local v = redis.call('HMGET', KEYS[1], 'status', 'expires', 'send_seq', 'resend_at')
if not v[1] then return {'not_found'} end
if v[1] ~= 'pending' then return {'not_pending', v[1]} end
if tonumber(ARGV[1]) >= tonumber(v[2]) then return {'not_pending', 'expired'} end
if tonumber(v[3]) >= tonumber(ARGV[3]) then return {'max_sends'} end
if tonumber(ARGV[1]) < tonumber(v[4]) then return {'too_soon', v[4]} end
local seq = redis.call('HINCRBY', KEYS[1], 'send_seq', 1)
redis.call('HSET', KEYS[1], 'resend_at', tostring(tonumber(ARGV[1]) + tonumber(ARGV[2])))
return {'begun', tostring(seq), v[4]}
"""

# Undo begin_send for a call that surely never left: the cooldown and the call budget come back.
_ABORT_SEND = """
local v = redis.call('HMGET', KEYS[1], 'resend_at', 'send_seq')
if not v[1] then return {'not_found'} end
if v[1] == ARGV[1] then redis.call('HSET', KEYS[1], 'resend_at', ARGV[2]) end
if v[2] == ARGV[3] then redis.call('HINCRBY', KEYS[1], 'send_seq', -1) end
return {'ok'}
"""

_COMMIT_SEND = (
    _RANK
    + """
local v = redis.call('HMGET', KEYS[1], 'status', 'd_send', 'd_status', 'expires')
if not v[1] then return {'not_found'} end
if v[1] ~= 'pending' then return {'not_pending', v[1]} end
if tonumber(ARGV[1]) >= tonumber(v[4]) then return {'not_pending', 'expired'} end
local seq = tonumber(ARGV[2])
if seq < tonumber(v[2]) then return {'superseded'} end
if seq > tonumber(v[2]) then
  redis.call('HSET', KEYS[1], 'd_send', ARGV[2], 'd_status', 'calling', 'd_provider_status', '',
             'd_duration', '', 'd_reason', '', 'd_updated', ARGV[1])
end
-- (same send: its callback came before this write, and the status it brought stays)
redis.call('HSET', KEYS[1], 'code_hash', ARGV[3], 'hash_params', ARGV[9], 'd_call_id', ARGV[4],
           'expires', ARGV[5], 'updated', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HINCRBY', KEYS[1], 'sends', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if rank(redis.call('HGET', KEYS[1], 'd_status')) < 2 then
  redis.call('ZADD', KEYS[2], ARGV[7], ARGV[8])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[6]) then redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
end
return {'committed'}
"""
)

# A call the provider never took. Delivery now describes this attempt; the first send's failure
# fails the verification (nothing pending is left that could never receive a call).
_FAIL_SEND = """
local v = redis.call('HMGET', KEYS[1], 'status', 'd_send')
if not v[1] then return {'not_found'} end
if ARGV[2] == '1' and v[1] == 'pending' then
  redis.call('HSET', KEYS[1], 'status', 'failed')
  redis.call('HDEL', KEYS[1], 'code_hash', 'hash_params')
end
if tonumber(ARGV[5]) >= tonumber(v[2]) then
  redis.call('HSET', KEYS[1], 'd_send', ARGV[5], 'd_status', ARGV[3], 'd_reason', ARGV[4], 'd_call_id', '',
             'd_provider_status', '', 'd_duration', '', 'd_updated', ARGV[1])
end
redis.call('HSET', KEYS[1], 'updated', ARGV[1])
return {'ok'}
"""

_CANCEL = """
local v = redis.call('HMGET', KEYS[1], 'status', 'expires')
if not v[1] then return {'not_found'} end
if v[1] ~= 'pending' then return {'not_pending', v[1]} end
if tonumber(ARGV[1]) >= tonumber(v[2]) then return {'not_pending', 'expired'} end
redis.call('HSET', KEYS[1], 'status', 'canceled', 'updated', ARGV[1])
redis.call('HDEL', KEYS[1], 'code_hash', 'hash_params')
return {'canceled'}
"""

# One call off a number's budget for the current window; a refused call takes nothing.
_TAKE_PHONE_CALL = """
local used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if used > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return {'refused'}
end
return {'taken'}
"""

# Lease the due open calls to this caller: pushing their score forward hides them from others.
_CLAIM_DUE_CALLS = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], member) end
return due
"""

_RECORD_DELIVERY = (
    _RANK
    + """
local v = redis.call('HMGET', KEYS[1], 'd_send', 'd_status', 'send_seq', 'd_call_id')
if not v[1] then return {'not_found'} end
local seq = tonumber(ARGV[2])
if seq == tonumber(v[1]) then
  if rank(ARGV[4]) <= rank(v[2]) then return {'ignored', v[2]} end
  redis.call('HSET', KEYS[1], 'd_status', ARGV[4], 'd_provider_status', ARGV[5], 'd_duration', ARGV[6],
             'd_updated', ARGV[1])
  -- the id the provider gave us when placing the call wins over whatever a callback body says
  if (not v[4] or v[4] == '') and ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'd_call_id', ARGV[3]) end
elseif seq == tonumber(v[3]) and seq > tonumber(v[1]) then
  -- the call being placed right now, reported before its placement was stored
  redis.call('HSET', KEYS[1], 'd_send', ARGV[2], 'd_status', ARGV[4], 'd_provider_status', ARGV[5],
             'd_duration', ARGV[6], 'd_reason', '', 'd_call_id', ARGV[3], 'd_updated', ARGV[1])
else
  return {'stale'}
end
if rank(ARGV[4]) == 2 then redis.call('ZREM', KEYS[2], ARGV[7]) end
return {'recorded'}
"""
)


# The scripts that also touch the open-calls set (given as KEYS[2]).
_TRACKING_SCRIPTS = frozenset({"commit_send", "record_delivery"})


@dataclass(frozen=True, slots=True)
class ScriptAnswer:
    """What a script decided: a verdict word and its details."""

    verdict: str
    details: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NewVerification:
    """What the service stores when it creates a verification, before its first call."""

    id: str
    phone: str
    code_length: int
    ttl_seconds: int
    created_at: datetime
    expires_at: datetime
    resend_available_at: datetime
    max_attempts: int
    metadata: dict[str, Any]


class VerificationStore:
    """Verification records and their atomic state moves."""

    def __init__(self, redis: Redis, retention_seconds: int):
        self._redis = redis
        self._retention_ms = retention_seconds * 1000
        self._scripts = {
            name: redis.register_script(source)
            for name, source in {
                "reserve_attempt": _RESERVE_ATTEMPT,
                "record_result": _RECORD_RESULT,
                "begin_send": _BEGIN_SEND,
                "abort_send": _ABORT_SEND,
                "commit_send": _COMMIT_SEND,
                "fail_send": _FAIL_SEND,
                "cancel": _CANCEL,
                "record_delivery": _RECORD_DELIVERY,
                "claim_due_calls": _CLAIM_DUE_CALLS,
                "take_phone_call": _TAKE_PHONE_CALL,
            }.items()
        }

    @staticmethod
    def key(verification_id: str) -> str:
        return KEY_PREFIX + verification_id

    def key_ttl_ms(self, now: datetime, expires_at: datetime) -> int:
        """Keep a record until its retention after expiry ends, so it can answer "expired"."""
        return max(1, to_millis(expires_at) - to_millis(now) + self._retention_ms)

    async def _run(self, script: str, verification_id: str, *args: object) -> ScriptAnswer:
        keys = [self.key(verification_id)]
        if script in _TRACKING_SCRIPTS:
            keys.append(OPEN_CALLS_KEY)
        raw = await self._scripts[script](keys=keys, args=[str(a) for a in args])
        words = tuple(_text(w) for w in raw)
        return ScriptAnswer(words[0], words[1:])

    async def create(self, new: NewVerification) -> None:
        """Store a pending verification whose first call (send 1) is about to be placed.

        Its code hash arrives with :meth:`commit_send`, once the provider has taken the call.
        """
        created = to_millis(new.created_at)
        fields: dict[Any, str | int] = {
            "status": VerificationStatus.PENDING.value,
            "phone": new.phone,
            "code_length": new.code_length,
            "ttl": new.ttl_seconds,
            "created": created,
            "updated": created,
            "expires": to_millis(new.expires_at),
            "attempts": 0,
            "failures": 0,
            "max_attempts": new.max_attempts,
            "sends": 0,
            "send_seq": 1,
            "resend_at": to_millis(new.resend_available_at),
            "metadata": json.dumps(new.metadata, separators=(",", ":")),
            "gen": 0,
            "d_send": 0,
            "d_status": DeliveryStatus.QUEUED.value,
            "d_updated": created,
        }
        key = self.key(new.id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, self.key_ttl_ms(new.created_at, new.expires_at))
            await pipe.execute()

    async def get(self, verification_id: str) -> Verification | None:
        raw = await self._redis.hgetall(self.key(verification_id))
        if not raw:
            return None
        return _to_verification(verification_id, {_text(k): _text(v) for k, v in raw.items()})

    async def reserve_attempt(self, verification_id: str, now: datetime, code_length: int) -> ScriptAnswer:
        """Count one attempt before any hash is checked; answers ``reserved, n, hash, generation``."""
        answer = await self._run("reserve_attempt", verification_id, to_millis(now), code_length)
        if answer.verdict != "reserved":
            return answer
        attempt, packed, generation, params = answer.details
        return ScriptAnswer(
            answer.verdict, (attempt, unpack_hash(params, packed) if packed else "", generation)
        )

    async def record_result(
        self, verification_id: str, now: datetime, generation: str, correct: bool
    ) -> ScriptAnswer:
        """Approve once (if the code's generation is still current) or count a failure."""
        return await self._run("record_result", verification_id, to_millis(now), generation, int(correct))

    async def begin_send(
        self, verification_id: str, now: datetime, cooldown_seconds: int, max_sends: int
    ) -> ScriptAnswer:
        """Reserve the next call (cooldown and budget checked atomically); answers ``begun, seq, prev``."""
        return await self._run(
            "begin_send", verification_id, to_millis(now), cooldown_seconds * 1000, max_sends
        )

    async def abort_send(
        self, verification_id: str, reserved_until: datetime, previous: str, send_seq: int
    ) -> None:
        """Give the cooldown and the call back when the provider surely never took the call."""
        await self._run("abort_send", verification_id, to_millis(reserved_until), previous, send_seq)

    async def commit_send(
        self,
        verification_id: str,
        now: datetime,
        send_seq: int,
        code_hash: str,
        call_id: str,
        expires_at: datetime,
        check_outcome_at: datetime,
    ) -> ScriptAnswer:
        """Make the newly called code the only valid one, and track its call until its outcome is known."""
        ttl = self.key_ttl_ms(now, expires_at)
        params, packed = pack_hash(code_hash)
        return await self._run(
            "commit_send",
            verification_id,
            to_millis(now),
            send_seq,
            packed,
            call_id,
            to_millis(expires_at),
            ttl,
            to_millis(check_outcome_at),
            open_call(verification_id, send_seq),
            params,
        )

    async def fail_send(
        self,
        verification_id: str,
        now: datetime,
        *,
        fail_verification: bool,
        delivery: DeliveryStatus,
        reason: str,
        send_seq: int,
    ) -> None:
        """Record a call that was never placed; on the first send the verification itself fails."""
        await self._run(
            "fail_send",
            verification_id,
            to_millis(now),
            int(fail_verification),
            delivery.value,
            reason,
            send_seq,
        )

    async def cancel(self, verification_id: str, now: datetime) -> ScriptAnswer:
        return await self._run("cancel", verification_id, to_millis(now))

    async def record_delivery(
        self,
        verification_id: str,
        now: datetime,
        send_seq: int,
        call_id: str,
        status: DeliveryStatus,
        provider_status: str,
        duration_seconds: int | None,
    ) -> ScriptAnswer:
        """Record a call outcome unless it is stale, a duplicate or would overwrite a final status."""
        duration = "" if duration_seconds is None else str(duration_seconds)
        return await self._run(
            "record_delivery",
            verification_id,
            to_millis(now),
            send_seq,
            call_id,
            status.value,
            provider_status,
            duration,
            open_call(verification_id, send_seq),
        )

    async def claim_due_calls(
        self, now: datetime, limit: int, lease_until: datetime
    ) -> list[tuple[str, int]]:
        """Open calls due for a look at the provider's report, leased to the caller until ``lease_until``.

        A lease rather than a removal: if this process dies mid-way, the calls come due again.
        """
        raw = await self._scripts["claim_due_calls"](
            keys=[OPEN_CALLS_KEY], args=[to_millis(now), limit, to_millis(lease_until)]
        )
        return [_parse_open_call(_text(member)) for member in raw]

    async def take_phone_call(self, phone: str, now: datetime, limit: int, window_seconds: int) -> int | None:
        """Count one call to ``phone`` in the current fixed window; None if allowed, else ms to wait."""
        window_ms = window_seconds * 1000
        window = to_millis(now) // window_ms
        key = f"{PHONE_BUDGET_PREFIX}{phone}:{window}"
        raw = await self._scripts["take_phone_call"](keys=[key], args=[limit, window_ms])
        if _text(raw[0]) == "taken":
            return None
        return max(1, (window + 1) * window_ms - to_millis(now))

    async def reschedule_call(self, verification_id: str, send_seq: int, at: datetime) -> None:
        await self._redis.zadd(OPEN_CALLS_KEY, {open_call(verification_id, send_seq): to_millis(at)}, xx=True)

    async def forget_call(self, verification_id: str, send_seq: int) -> None:
        await self._redis.zrem(OPEN_CALLS_KEY, open_call(verification_id, send_seq))


def pack_hash(encoded: str) -> tuple[str, str]:
    """Split an argon2 hash into its parameters and one base64 of salt and digest.

    Why: Redis keeps a small hash as a compact listpack only while every value is at most 64 bytes;
    the encoded argon2 string (~97 bytes) alone doubles a verification's memory. Salt (16 bytes) and
    digest (32 bytes) pack into exactly 64 base64 characters.
    """
    params, salt, digest = encoded.rsplit("$", 2)
    return params, base64.b64encode(_unb64(salt) + _unb64(digest)).decode()


def unpack_hash(params: str, packed: str) -> str:
    """The encoded argon2 hash that :func:`pack_hash` split."""
    raw = base64.b64decode(packed)
    salt, digest = raw[:SALT_BYTES], raw[SALT_BYTES:]
    return f"{params}${_b64(salt)}${_b64(digest)}"


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def open_call(verification_id: str, send_seq: int) -> str:
    """The open-calls member naming one call of one verification."""
    return f"{verification_id}|{send_seq}"


def _parse_open_call(member: str) -> tuple[str, int]:
    verification_id, _, send_seq = member.rpartition("|")
    return verification_id, int(send_seq)


def _to_verification(verification_id: str, fields: dict[str, str]) -> Verification:
    def optional(name: str) -> str | None:
        return fields.get(name) or None

    duration = optional("d_duration")
    delivery = Delivery(
        send_seq=int(fields["d_send"]),
        status=DeliveryStatus(fields["d_status"]),
        call_id=optional("d_call_id"),
        provider_status=optional("d_provider_status"),
        duration_seconds=int(duration) if duration is not None else None,
        reason=optional("d_reason"),
        updated_at=from_millis(int(fields["d_updated"])),
    )
    return Verification(
        id=verification_id,
        status=VerificationStatus(fields["status"]),
        phone=fields["phone"],
        code_length=int(fields["code_length"]),
        ttl_seconds=int(fields["ttl"]),
        created_at=from_millis(int(fields["created"])),
        updated_at=from_millis(int(fields["updated"])),
        expires_at=from_millis(int(fields["expires"])),
        attempts=int(fields["attempts"]),
        max_attempts=int(fields["max_attempts"]),
        sends=int(fields["sends"]),
        resend_available_at=from_millis(int(fields["resend_at"])),
        delivery=delivery,
        metadata=json.loads(fields.get("metadata") or "{}"),
    )


def _text(value: object) -> str:
    """A Redis reply word as text (replies come as bytes; Lua numbers as ints)."""
    return value.decode() if isinstance(value, bytes) else str(value)
