"""Reading a verification record (a Redis hash with short field names) into the domain's type.

The field names are documented in ``lua/_prelude.lua``. A record keeps the argon2 hash of each
accepted code packed (:func:`pack_hash`), so every value stays within Redis's compact encoding.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from otpservice.domain.clock import from_millis
from otpservice.domain.codes import SALT_BYTES
from otpservice.domain.verification import Delivery, DeliveryStatus, Verification, VerificationStatus


def text(value: object) -> str:
    """A Redis reply word as text (replies come as bytes; Lua numbers as ints)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def fields_of(flat: Sequence[object]) -> dict[str, str]:
    """A flat ``HGETALL``-style list as a dict of text."""
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def to_verification(verification_id: str, fields: Mapping[str, str]) -> Verification:
    """The verification a record describes (status as stored; the service applies the clock)."""

    def optional(name: str) -> str | None:
        return fields.get(name) or None

    created = int(fields["ca"])  # every other time is kept in ms after it (see lua/_prelude.lua)
    duration = optional("ddu")
    status = VerificationStatus(fields["st"])
    failures = int(fields.get("fl", 0))  # absent until the first wrong code
    delivery = Delivery(
        send_seq=int(fields["ds"]),
        status=DeliveryStatus(fields["dst"]),
        call_id=optional("dci"),
        provider_status=optional("dps"),
        duration_seconds=int(duration) if duration is not None else None,
        reason=optional("drs"),
        updated_at=from_millis(_after(created, fields["dua"])),
    )
    metadata: dict[str, Any] = json.loads(fields["md"]) if fields.get("md") else {}
    return Verification(
        id=verification_id,
        status=status,
        phone=fields["ph"],
        code_length=int(fields["cl"]),
        ttl_seconds=int(fields["tt"]),
        created_at=from_millis(created),
        updated_at=from_millis(_after(created, fields["ua"])),
        expires_at=from_millis(_after(created, fields["ex"])),
        # every wrong code was judged, and so was the right one that approved
        attempts=failures + (1 if status is VerificationStatus.APPROVED else 0),
        max_attempts=int(fields["ma"]),
        sends=int(fields["sn"]),
        resend_available_at=from_millis(_after(created, fields["ra"])),
        delivery=delivery,
        metadata=metadata,
        tenant=fields.get("tn", "default"),
        custom_code="cc" in fields,
    )


# argon2id parameters as argon2-cffi writes them; kept as "m,t,p" (16 bytes fewer per code).
_ARGON2ID_PARAMS = re.compile(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)")


def _after(created_ms: int, stamp: str) -> int:
    """A time kept as ms after creation, as epoch ms; records written before that kept epoch ms."""
    value = int(stamp)
    return value if value >= _EPOCH_MS_FLOOR else created_ms + value


_EPOCH_MS_FLOOR = 10**12  # September 2001 in epoch ms: no verification lives that long after creation


def pack_hash(encoded: str) -> tuple[str, str]:
    """Split an argon2 hash into its parameters ("m,t,p") and one base64 of salt and digest.

    Why: Redis keeps a small hash as a compact listpack only while every value is at most 64 bytes;
    the encoded argon2 string (~97 bytes) alone doubles a verification's memory. Salt (16 bytes) and
    digest (32 bytes) pack into exactly 64 base64 characters. Other parameter strings are kept whole.
    """
    params, salt, digest = encoded.rsplit("$", 2)
    standard = _ARGON2ID_PARAMS.fullmatch(params)
    if standard:
        params = ",".join(standard.groups())
    return params, base64.b64encode(_unb64(salt) + _unb64(digest)).decode()


def unpack_hash(params: str, packed: str) -> str:
    """The encoded argon2 hash that :func:`pack_hash` split."""
    raw = base64.b64decode(packed)
    salt, digest = raw[:SALT_BYTES], raw[SALT_BYTES:]
    if not params.startswith("$"):
        memory, time_cost, lanes = params.split(",")
        params = f"$argon2id$v=19$m={memory},t={time_cost},p={lanes}"
    return f"{params}${_b64(salt)}${_b64(digest)}"


def _unb64(value: str) -> bytes:
    return base64.b64decode(value + "=" * (-len(value) % 4))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")
