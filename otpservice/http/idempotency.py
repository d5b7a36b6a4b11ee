"""Idempotency-Key on the requests that place paid calls: a repeat gets the first answer, no new call.

Scoped per tenant and kept 24 hours. The first request with a key claims it; a concurrent repeat
waits for that answer (up to ``WAIT_SECONDS``, then 409 ``idempotency_in_progress``); the same key
with a different request is 422 ``idempotency_key_reused``. An answer that changed nothing (a
refusal, bad input, storage down before anything happened) is not kept: the key is let go, so the
repeat runs again instead of replaying a refusal that may no longer hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import ValidationException

from otpservice.adapters.storage.idempotency import IdempotencyRecords, StoredAnswer
from otpservice.domain import errors
from otpservice.http.problems import domain_problem
from otpservice.service.repairs import RepairQueue
from otpservice.tenants import Tenant

WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.05
_REPLAYED = "Idempotent-Replayed"
_KEY_HEADER = "Idempotency-Key"


@dataclass(frozen=True, slots=True)
class Answer:
    """A response as sent and as kept: status, JSON body, headers worth replaying."""

    status: int
    body: bytes
    headers: dict[str, str]
    media_type: str = "application/json"

    @classmethod
    def of(cls, status: int, content: msgspec.Struct) -> Answer:
        return cls(status, msgspec.json.encode(content), {})

    def response(self, *, replayed: bool = False) -> Response[bytes]:
        headers = self.headers | ({_REPLAYED: "true"} if replayed else {})
        return Response(self.body, status_code=self.status, headers=headers, media_type=self.media_type)

    @property
    def changed_something(self) -> bool:
        """Whether a repeat must replay this answer: it succeeded, or a call may have gone out."""
        if self.status < 400:
            return True
        problem = json.loads(self.body)
        # provider_rejected: a verification was created (failed); custom_code_mismatch: an attempt was spent
        return bool(
            problem.get("call_placed")
            or problem.get("call_may_have_rung")
            or problem.get("code") in ("provider_rejected", "custom_code_mismatch")
        )


class Idempotency:
    def __init__(
        self, records: IdempotencyRecords, repairs: RepairQueue, lease_seconds: float, pepper: bytes
    ):
        self._records = records
        self._repairs = repairs
        self._lease_ms = int(lease_seconds * 1000)
        # keyed: a body may carry a chosen code, and a plain hash of it in Redis could be reversed
        self._fingerprint_key = hmac.new(pepper, b"idempotency-fingerprint", hashlib.sha256).digest()

    def fingerprint(self, route: str, body: msgspec.Struct | None) -> str:
        """What makes two requests "the same": the route (with its id) and the decoded body."""
        # sorted: the same fields in another order (metadata keys, say) are the same request
        encoded = msgspec.json.encode(body, order="sorted") if body is not None else b""
        return hmac.new(self._fingerprint_key, route.encode() + b"\x00" + encoded, hashlib.sha256).hexdigest()

    async def run(
        self,
        request: Request[Any, Any, Any],
        tenant: Tenant,
        key: str | None,
        request_fingerprint: str,
        handle: Callable[[], Awaitable[Answer]],
    ) -> Response[bytes]:
        """Answer the request once per key: run ``handle`` if this request holds the key."""
        if len(request.headers.getall(_KEY_HEADER, [])) > 1:
            # the framework reads the first; a proxy or client sending two means one of them is lost
            raise ValidationException(
                "Idempotency-Key sent more than once",
                extra=[{"key": _KEY_HEADER, "message": "send one Idempotency-Key header, not several"}],
            )
        if key is None:
            return (await _answered(request, handle)).response()
        owner = secrets.token_hex(8)
        deadline = time.monotonic() + WAIT_SECONDS
        while (held := await self._claim(tenant, key, request_fingerprint, owner)) is not None:
            if held.fingerprint != request_fingerprint:
                raise errors.IdempotencyKeyReused()
            if held.state == "done":
                return Answer(held.status, held.body, {}, _media_type(held.status)).response(replayed=True)
            if time.monotonic() >= deadline:
                held_for = -(-held.held_ms // 1000) if held.held_ms > 0 else None  # PTTL -1: no expiry
                raise errors.IdempotencyInProgress(1, held_for_seconds=held_for)
            await asyncio.sleep(_POLL_SECONDS)
        try:
            answer = await _answered(request, handle)
        except BaseException:
            self._repairs.submit(
                "release_idempotency_key", self._settle(tenant, key, owner, request_fingerprint, None)
            )
            raise
        # written now, or in the background if storage fails (the answer stands either way)
        await self._repairs.write(
            "settle_idempotency_key", self._settle(tenant, key, owner, request_fingerprint, answer)
        )
        return answer.response()

    async def _claim(
        self, tenant: Tenant, key: str, request_fingerprint: str, owner: str
    ) -> StoredAnswer | None:
        try:
            return await self._records.claim(tenant.name, key, request_fingerprint, owner, self._lease_ms)
        except errors.StorageUnavailable as exc:
            # the claim may still land (a stalled server applies what it had queued) and would hold
            # the key for a lease after this request answered that nothing was done: give it up
            self._repairs.submit(
                "release_idempotency_key", self._settle(tenant, key, owner, request_fingerprint, None)
            )
            raise errors.StorageUnavailable(
                "storage did not answer, so nothing was done and no call was placed; send the request "
                "again with the same Idempotency-Key",
                call_placed=False,
            ) from exc

    def _settle(
        self, tenant: Tenant, key: str, owner: str, request_fingerprint: str, answer: Answer | None
    ) -> Callable[[], Awaitable[None]]:
        """Keep the answer for repeats, or let the key go when the request changed nothing."""

        async def settle() -> None:
            if answer is not None and answer.changed_something:
                # no headers kept: a Retry-After replayed hours later would only invite pointless retries
                await self._records.keep(
                    tenant.name, key, owner, request_fingerprint, answer.status, answer.body
                )
            else:
                await self._records.release(tenant.name, key, owner, self._lease_ms)

        return settle


async def _answered(request: Request[Any, Any, Any], handle: Callable[[], Awaitable[Answer]]) -> Answer:
    """The handler's answer, with a domain refusal turned into its problem document."""
    try:
        return await handle()
    except errors.VerificationError as exc:
        problem = domain_problem(exc).to_response(request)
        headers = {name: value for name, value in (problem.headers or {}).items() if name == "Retry-After"}
        status = problem.status_code or 500
        return Answer(status, msgspec.json.encode(problem.content), headers, _media_type(status))


def _media_type(status: int) -> str:
    return "application/problem+json" if status >= 400 else "application/json"
