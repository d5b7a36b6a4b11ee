"""Where everything lives in Redis: one layout, ready for Redis Cluster.

A Lua script may only touch keys of one Cluster slot, and a slot is chosen by the part of a key
between ``{`` and ``}`` (its hash tag). Verifications are spread over ``SHARDS`` fixed shards; a
verification's record and its shard's call schedule share the shard's tag, so one script can
change a verification and schedule its call atomically. A verification's id is drawn so that it
lands in its phone number's shard, and the number's own keys (its calls log, its pending
verification per tenant, its wrong codes per tenant: ``otp:{sNN}:n:<e164>:<what>``, named in
``lua/_prelude.lua``) live there too: one script checks the number's budget and lock and changes the
verification in one step. Budgets of other subjects (a client address, a number range, a tenant's
day, everything) each have their own tag, so each is one script on one slot.

``SHARDS`` is part of the data layout: changing it moves verifications to other keys, so it is a
constant, not a setting. 16 shards spread over up to 16 Cluster primaries.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

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


def shard_of_number(phone_e164: str) -> int:
    """The shard where a number's verifications and counters live."""
    return zlib.crc32(phone_e164.encode()) % SHARDS


def id_in_number_shard(phone_e164: str, draw: Callable[[], str]) -> str:
    """A fresh id (from ``draw``) that lands in the number's shard: 16 draws on average."""
    shard = shard_of_number(phone_e164)
    while True:
        candidate = draw()
        if shard_of(candidate) == shard:
            return candidate


def number_keys(phone_e164: str, tenant: str) -> tuple[str, ...]:
    """A number's keys a script may touch for a tenant's verification (names as lua/_prelude.lua
    builds them): its calls log, its calls given back, its pending verification, its wrong codes.
    Declared to the scripts that check the number's budget, so that while its slot moves between
    Cluster nodes a script runs only where all of them are (else the server answers TRYAGAIN)."""
    prefix = f"{_shard_prefix(shard_of_number(phone_e164))}:n:{phone_e164}"
    return f"{prefix}:calls", f"{prefix}:back", f"{prefix}:pending:{tenant}", f"{prefix}:wrong:{tenant}"


def budget_keys(subject: str) -> tuple[str, str]:
    """A budget's log of calls and its set of calls given back; ``subject`` is its own hash tag."""
    return f"{PREFIX}:{{{subject}}}:calls", f"{PREFIX}:{{{subject}}}:back"


def outbox_keys(shard: int) -> tuple[str, str, str, str]:
    """A shard's event delivery schedule, its outbox (payloads), its dead letters and their times of
    death (a sorted set: each dead letter is dropped 30 days after it died)."""
    prefix = _shard_prefix(shard)
    return f"{prefix}:deliveries", f"{prefix}:outbox", f"{prefix}:dead", f"{prefix}:dead_at"


def expiry_schedule_key(shard: int) -> str:
    """A shard's sorted set of verifications by expiry (the expiry sweep's work list)."""
    return f"{_shard_prefix(shard)}:expiry"
