"""The verification use cases: start, resend, cancel, verify and read.

Thin HTTP handlers call these; every rule lives in the domain, every atomic move in the store, the
placing of calls in :mod:`placement` and what the provider reports back in :mod:`delivery`.

Under storage faults every answer says what is known (see the README, "When storage fails"): a
request either changed nothing, or says what it did and gives the id to follow up.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from otpservice.adapters.storage.budget import BudgetTicket, PhoneBudget
from otpservice.adapters.storage.store import NewVerification, VerificationStore
from otpservice.domain import errors
from otpservice.domain.clock import Clock
from otpservice.domain.codes import RandomBelow, generate_code
from otpservice.domain.phone import PhoneNumber, mask_phone, parse_phone, stored_phone
from otpservice.domain.verification import Verification, VerificationStatus
from otpservice.service import metrics
from otpservice.service.hashing import HashingPool
from otpservice.service.placement import CallPlacer, CallRequest
from otpservice.service.repairs import RepairQueue
from otpservice.settings import Settings

log = structlog.get_logger(__name__)

# How long a reserved attempt may stay unjudged before it counts as abandoned and comes back.
ATTEMPT_LEASE_SECONDS = 15


def new_verification_id() -> str:
    return "vf_" + secrets.token_hex(16)


def new_request_token() -> str:
    """Names one request's writes, so that a retried write is recognised and applied once."""
    return secrets.token_hex(8)


def _resend_not_placed(verification_id: str) -> errors.StorageUnavailable:
    """Storage failed before a resend's call was placed: nothing rang, the current code stands."""
    return errors.StorageUnavailable(
        "storage did not answer, so no call was placed; the current code still works",
        verification_id=verification_id,
        call_placed=False,
    )


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The answer to one submitted code."""

    valid: bool
    verification: Verification


class VerificationService:
    """The use cases, over injected seams: stores, call placer, hashing, clock and randomness."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: VerificationStore,
        budget: PhoneBudget,
        placer: CallPlacer,
        hashing: HashingPool,
        clock: Clock,
        repairs: RepairQueue,
        randbelow: RandomBelow = secrets.randbelow,
        new_id: Callable[[], str] = new_verification_id,
        new_token: Callable[[], str] = new_request_token,
    ):
        self._settings = settings
        self._store = store
        self._budget = budget
        self._placer = placer
        self._hashing = hashing
        self._clock = clock
        self._repairs = repairs
        self._randbelow = randbelow
        self._new_id = new_id
        self._new_token = new_token

    async def start(
        self,
        raw_phone: str,
        *,
        code_length: int | None = None,
        ttl_seconds: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Verification:
        """Create a verification and place its first call."""
        phone = parse_phone(raw_phone, self._settings.allowed_countries)
        length = code_length or self._settings.code_length
        ttl = ttl_seconds or self._settings.ttl_seconds
        verification_id = self._new_id()
        now = self._clock.now()
        try:
            ticket = await self._take_call(phone, verification_id, 1, now)
        except errors.StorageUnavailable as exc:
            raise errors.StorageUnavailable(
                "storage did not answer, so nothing was stored and no call was placed; start again",
                call_placed=False,
            ) from exc
        code = generate_code(length, self._randbelow)
        new = NewVerification(
            id=verification_id,
            phone=phone.e164,
            code_length=length,
            ttl_seconds=ttl,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            resend_available_at=now + timedelta(seconds=self._settings.resend_cooldown_seconds),
            max_attempts=self._settings.max_attempts,
            metadata=metadata or {},
        )
        code_hash = await self._hashing.hash(verification_id, code)
        try:
            await self._store.create(new, code_hash, self._placer.placement_deadline(now))
        except errors.StorageUnavailable as exc:
            # The create may still land later: make sure it can only land as failed, never pending.
            reason = "not placed: storage unavailable"
            self._repairs.submit(
                "void_create", lambda: self._store.void_create(new, reason), verification_id=verification_id
            )
            await self._placer.give_back(ticket, verification_id, now=False)
            raise errors.StorageUnavailable(
                "storage did not answer, so no call was placed; start again (this id, if it ever "
                "appears, is failed)",
                verification_id=verification_id,
                call_placed=False,
            ) from exc
        log.info("verification.created", verification_id=verification_id, phone=mask_phone(phone.e164))
        metrics.VERIFICATIONS_STARTED.inc()
        placed = await self._placer.place(
            CallRequest(verification_id, phone, code, send_seq=1, ttl_seconds=ttl, budget=ticket)
        )
        return placed.as_of(self._clock.now())

    async def resend(self, verification_id: str) -> Verification:
        """Call again with a new code; the old code works until the new call is known to be placed."""
        current = await self.get(verification_id)
        if current.status is not VerificationStatus.PENDING:
            raise errors.NotPending(current.status)
        phone = stored_phone(current.phone)
        code = generate_code(current.code_length, self._randbelow)
        code_hash = await self._hashing.hash(verification_id, code)
        now = self._clock.now()
        try:
            send_seq = await self._store.begin_send(
                verification_id,
                now,
                cooldown_seconds=self._settings.resend_cooldown_seconds,
                max_sends=self._settings.max_sends,
                code_hash=code_hash,
                ttl_seconds=current.ttl_seconds,
                placement_deadline=self._placer.placement_deadline(now),
            )
        except errors.StorageUnavailable as exc:
            raise _resend_not_placed(verification_id) from exc
        call = CallRequest(verification_id, phone, code, send_seq, current.ttl_seconds, budget=None)
        try:
            ticket = await self._take_call(phone, verification_id, send_seq, now)
        except errors.PhoneRateLimited:
            await self._placer.abandon(call, "the number's call budget is spent")
            raise
        except errors.StorageUnavailable as exc:
            await self._placer.abandon(call, "storage unavailable", later=True)
            raise _resend_not_placed(verification_id) from exc
        placed = await self._placer.place(
            CallRequest(verification_id, phone, code, send_seq, current.ttl_seconds, budget=ticket)
        )
        return placed.as_of(self._clock.now())

    async def _take_call(
        self, phone: PhoneNumber, verification_id: str, send_seq: int, now: datetime
    ) -> BudgetTicket:
        """Spend one call of the number's hourly budget, or refuse before anything is dialled."""
        ticket = self._budget.ticket(phone.e164, f"{verification_id}:{send_seq}", now, 3600)
        try:
            wait_ms = await self._budget.take(ticket, now, self._settings.phone_calls_per_hour)
        except errors.StorageUnavailable:
            await self._placer.give_back(ticket, verification_id, now=False)  # its count may still land
            raise
        if wait_ms is not None:
            log.warning("call.phone_rate_limited", phone=mask_phone(phone.e164))
            metrics.CALLS.labels("rate_limited").inc()
            raise errors.PhoneRateLimited(retry_after_seconds=(wait_ms + 999) // 1000)
        return ticket

    async def cancel(self, verification_id: str) -> Verification:
        now = self._clock.now()
        try:
            canceled = await self._store.cancel(verification_id, self._new_token(), now)
        except errors.StorageUnavailable as exc:
            raise errors.StorageUnavailable(
                "storage did not answer; the cancel may still be applied: GET the verification",
                verification_id=verification_id,
            ) from exc
        log.info("verification.canceled", verification_id=verification_id)
        return canceled.as_of(now)

    async def verify(self, verification_id: str, code: str) -> VerifyResult:
        """Check a code: the attempt is reserved atomically first, then the hash is compared."""
        if not code.isascii() or not code.isdigit():
            raise errors.InvalidCodeFormat("the code must be digits only")
        token = self._new_token()
        now = self._clock.now()
        lease_until = now + timedelta(seconds=ATTEMPT_LEASE_SECONDS)
        try:
            reservation = await self._store.reserve(verification_id, token, now, len(code), lease_until)
        except errors.StorageUnavailable as exc:
            self._release(verification_id, token, now)
            raise errors.StorageUnavailable(
                "storage did not answer; the code was not checked and no attempt was spent; submit it again",
                verification_id=verification_id,
            ) from exc
        matched = None
        for accepted in reservation.codes:
            if await self._hashing.matches(verification_id, code, accepted.encoded_hash):
                matched = accepted.send_seq
                break
        try:
            judgement = await self._store.judge(verification_id, token, self._clock.now(), matched)
        except errors.StorageUnavailable as exc:
            self._release(verification_id, token, now)
            raise errors.StorageUnavailable(
                "storage did not answer while the result was recorded; GET the verification once storage "
                "is back: if it did not change, no attempt was spent and the code can be submitted again",
                verification_id=verification_id,
            ) from exc
        log.info("verification.checked", verification_id=verification_id, outcome=judgement.verdict)
        metrics.CODE_CHECKS.labels(judgement.verdict).inc()
        return VerifyResult(
            valid=judgement.verdict == "approved",
            verification=judgement.verification.as_of(self._clock.now()),
        )

    def _release(self, verification_id: str, token: str, now: datetime) -> None:
        """Give the attempt back in the background; a reservation that lands later is void."""
        self._repairs.submit(
            "release_attempt",
            lambda: self._store.release(verification_id, token, now),
            verification_id=verification_id,
        )

    async def get(self, verification_id: str) -> Verification:
        try:
            verification = await self._store.get(verification_id)
        except errors.StorageUnavailable as exc:
            raise errors.StorageUnavailable(
                "storage did not answer; nothing was changed", verification_id=verification_id
            ) from exc
        now = self._clock.now()
        retention = timedelta(seconds=self._settings.retention_seconds)
        if verification is None or now >= verification.expires_at + retention:
            raise errors.VerificationNotFound(verification_id)
        return verification.as_of(now)
