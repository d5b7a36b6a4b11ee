"""Where everything lives in Redis: one layout, ready for Redis Cluster.

A Lua script may only touch keys of one Cluster slot, and a slot is chosen by the part of a key
between ``{`` and ``}`` (its hash tag). Verifications are spread over ``SHARDS`` fixed shards; a
verification's record and its shard's call schedule share the shard's tag, so one script can
change a verification and schedule its call atomically. Per-number counters are tagged by the
number, so every counter of one number sits in one slot whatever is added later.

``SHARDS`` is part of the data layout: changing it moves verifications to other keys, so it is a
constant, not a setting. 16 shards spread over up to 16 Cluster primaries.
"""

from __future__ import annotations

import zlib

SHARDS = 16
PREFIX = "otp"


def shard_of(verification_id: str) -> int:
    """The shard a verification lives in, fixed by its id."""
    return zlib.crc32(verification_id.encode()) % SHARDS


def _shard_prefix(shard: int) -> str:
    return f"{PREFIX}:{{s{shard:02d}}}"


def verification_key(verification_id: str) -> str:
    """The hash holding one verification."""
    return f"{_shard_prefix(shard_of(verification_id))}:{verification_id}"


def call_schedule_key(shard: int) -> str:
    """The shard's sorted set of calls to look at again, scored by when (epoch ms)."""
    return f"{_shard_prefix(shard)}:calls"


def schedule_key_for(verification_id: str) -> str:
    """The call schedule of the verification's own shard (same slot as its record)."""
    return call_schedule_key(shard_of(verification_id))


def scheduled_call(verification_id: str, send_seq: int) -> str:
    """The schedule member naming one call of one verification."""
    return f"{verification_id}|{send_seq}"


def parse_scheduled_call(member: str) -> tuple[str, int]:
    verification_id, _, send_seq = member.rpartition("|")
    return verification_id, int(send_seq)


def phone_calls_key(phone_e164: str, window: int) -> str:
    """The set of calls placed to one number in one budget window, tagged by the number."""
    return f"{PREFIX}:{{{phone_e164}}}:calls:{window}"


def phone_calls_given_back_key(phone_e164: str, window: int) -> str:
    """The set of calls to one number in one window that were given back (never left)."""
    return f"{PREFIX}:{{{phone_e164}}}:given-back:{window}"
