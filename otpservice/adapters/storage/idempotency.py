"""Idempotency-Key records: which request holds a key, and the answer it gave, kept 24 hours.

Each key is one hash under its own hash tag, claimed and settled by scripts, so concurrent requests
with one key agree on a single owner (the rest wait for its answer).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from otpservice.adapters.storage.records import text
from otpservice.adapters.storage.scripts import Storage
from otpservice.domain import errors

KEEP_SECONDS = 24 * 3600


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """What holds a key: a request still ``running``, or the answer it gave (``done``)."""

    state: Literal["running", "done"]
    fingerprint: str
    status: int
    body: bytes
    held_ms: int = 0  # how long the record is kept yet: a running request's claim, at the latest


def _record_key(tenant: str, idempotency_key: str) -> str:
    # Hashed: the key is client text (any printable ASCII, braces included) and only its identity matters.
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    return f"otp:{{i:{tenant}:{digest}}}"


class IdempotencyRecords:
    def __init__(self, storage: Storage):
        self._storage = storage

    async def claim(
        self, tenant: str, idempotency_key: str, fingerprint: str, owner: str, lease_ms: int
    ) -> StoredAnswer | None:
        """None when this request now holds the key, else what holds it."""
        reply = await self._storage.run(
            "idempotency_claim", [_record_key(tenant, idempotency_key)], [fingerprint, owner, lease_ms]
        )
        if text(reply[0]) == "claimed":
            return None
        if text(reply[0]) == "released":  # given up by this request, which answered already
            raise errors.StorageUnavailable("the key's claim was given up; send the request again")
        state: Literal["running", "done"] = "done" if text(reply[0]) == "done" else "running"
        status = text(reply[2])
        body = reply[3] if isinstance(reply[3], bytes) else text(reply[3]).encode()
        return StoredAnswer(state, text(reply[1]), int(status) if status else 0, body, int(reply[4]))

    async def keep(
        self, tenant: str, idempotency_key: str, owner: str, fingerprint: str, status: int, body: bytes
    ) -> None:
        """Keep the answer for repeats of the request (``fingerprint``: the request's)."""
        await self._storage.run(
            "idempotency_settle",
            [_record_key(tenant, idempotency_key)],
            [owner, "keep", status, body.decode(), KEEP_SECONDS * 1000, fingerprint],
        )

    async def release(self, tenant: str, idempotency_key: str, owner: str, lease_ms: int) -> None:
        """Let the key go: the request changed nothing, so a repeat may run again. A claim of this
        request landing later (``lease_ms`` from now at most) takes nothing."""
        await self._storage.run(
            "idempotency_settle",
            [_record_key(tenant, idempotency_key)],
            [owner, "release", "", "", lease_ms, ""],
        )
