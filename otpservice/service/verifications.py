"""The verification use cases: start, resend, cancel, verify, read, and record a call's outcome.

Thin HTTP handlers call these; every rule lives in the domain, every atomic move in the store.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from otpservice.adapters.autocall import models as autocall
from otpservice.adapters.autocall.callback import CallbackReport
from otpservice.adapters.redis_store import NewVerification, ScriptAnswer, VerificationStore
from otpservice.domain import errors
from otpservice.domain.callback_auth import CallbackSigner
from otpservice.domain.clock import Clock, from_millis
from otpservice.domain.codes import RandomBelow, generate_code
from otpservice.domain.phone import PhoneNumber, mask_phone, parse_phone, stored_phone
from otpservice.domain.verification import DeliveryStatus, Verification, VerificationStatus
from otpservice.service import metrics
from otpservice.service.hashing import HashingPool
from otpservice.service.ports import VoiceCaller
from otpservice.settings import Settings

log = structlog.get_logger(__name__)

# How long a client should wait before retrying when the provider is down.
PROVIDER_RETRY_AFTER_SECONDS = 5


def new_verification_id() -> str:
    return "vf_" + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The answer to one submitted code."""

    valid: bool
    verification: Verification


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """What a callback did: ``recorded``, ``duplicate`` (final status kept) or ``stale`` (older call)."""

    outcome: str
    verification_id: str


class VerificationService:
    """The use cases, over injected seams: store, voice caller, hashing, clock and randomness."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: VerificationStore,
        caller: VoiceCaller,
        hashing: HashingPool,
        clock: Clock,
        signer: CallbackSigner,
        randbelow: RandomBelow = secrets.randbelow,
        new_id: Callable[[], str] = new_verification_id,
    ):
        self._settings = settings
        self._store = store
        self._caller = caller
        self._hashing = hashing
        self._clock = clock
        self._signer = signer
        self._randbelow = randbelow
        self._new_id = new_id

    async def start(
        self,
        raw_phone: str,
        *,
        code_length: int | None = None,
        ttl_seconds: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Verification:
        """Create a verification and place its first call; nothing pending survives a failed call."""
        phone = parse_phone(raw_phone, self._settings.allowed_countries)
        length = code_length or self._settings.code_length
        ttl = ttl_seconds or self._settings.ttl_seconds
        verification_id = self._new_id()
        now = self._clock.now()
        await self._take_phone_call(phone, now)
        await self._store.create(
            NewVerification(
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
        )
        log.info("verification.created", verification_id=verification_id, phone=mask_phone(phone.e164))
        metrics.VERIFICATIONS_STARTED.inc()
        await self._send(verification_id, phone, length, ttl, send_seq=1, first=True)
        return await self.get(verification_id)

    async def resend(self, verification_id: str) -> Verification:
        """Place a new call with a new code; the old code stops working, used attempts stay used."""
        now = self._clock.now()
        answer = await self._store.begin_send(
            verification_id, now, self._settings.resend_cooldown_seconds, self._settings.max_sends
        )
        if answer.verdict == "too_soon":
            available_at = from_millis(int(answer.details[0]))
            wait = max(1, int((available_at - now).total_seconds() + 0.999))
            raise errors.ResendTooSoon(available_at, wait)
        if answer.verdict == "max_sends":
            raise errors.SendLimitReached(
                f"this verification has used its {self._settings.max_sends} calls; start a new one"
            )
        self._raise_unless(answer, "begun", verification_id)
        send_seq, previous_resend_at = int(answer.details[0]), answer.details[1]
        verification = await self.get(verification_id)
        phone = stored_phone(verification.phone)
        reserved_until = now + timedelta(seconds=self._settings.resend_cooldown_seconds)
        try:
            await self._take_phone_call(phone, now)
        except errors.PhoneRateLimited:
            await self._store.abort_send(verification_id, reserved_until, previous_resend_at, send_seq)
            raise
        try:
            await self._send(
                verification_id,
                phone,
                verification.code_length,
                verification.ttl_seconds,
                send_seq,
                first=False,
            )
        except errors.ProviderUnavailable as exc:
            if not exc.call_may_have_rung:
                await self._store.abort_send(verification_id, reserved_until, previous_resend_at, send_seq)
            raise
        return await self.get(verification_id)

    async def _take_phone_call(self, phone: PhoneNumber, now: datetime) -> None:
        """Spend one call of the number's hourly budget, or refuse before anything is stored or dialled."""
        wait_ms = await self._store.take_phone_call(
            phone.e164, now, self._settings.phone_calls_per_hour, 3600
        )
        if wait_ms is not None:
            log.warning("call.phone_rate_limited", phone=mask_phone(phone.e164))
            metrics.CALLS.labels("rate_limited").inc()
            raise errors.PhoneRateLimited(retry_after_seconds=(wait_ms + 999) // 1000)

    async def _send(
        self, verification_id: str, phone: PhoneNumber, length: int, ttl: int, send_seq: int, *, first: bool
    ) -> None:
        code = generate_code(length, self._randbelow)
        code_hash = await self._hashing.hash(verification_id, code)
        credential = self._signer.credential(verification_id, send_seq)
        callback_url = (
            f"{self._settings.public_url}/callbacks/autocall/{verification_id}/{send_seq}/{credential}"
        )
        bound = log.bind(verification_id=verification_id, send=send_seq, phone=mask_phone(phone.e164))
        try:
            placement = await self._caller.place_otp_call(
                [phone.national],
                code=code,
                template_name=self._settings.autocall.template,
                callback_url=callback_url,
                callback_apikey=credential,
            )
        except autocall.AutocallError as exc:
            # Only an error that says so proves the call never left; unreadable answers may hide a call.
            may_have_rung = (
                isinstance(exc, autocall.ProviderUnavailable | autocall.ProviderMalformedResponse)
                and exc.request_may_have_reached_provider
            )
            raise await self._unplaced(
                verification_id, send_seq, first, type(exc).__name__, may_have_rung
            ) from exc
        rejection = placement.rejection_for(phone.national)
        if rejection is not None:
            bound.warning("call.rejected", reason=rejection.reason)
            metrics.CALLS.labels("rejected").inc()
            await self._store.fail_send(
                verification_id,
                self._clock.now(),
                fail_verification=first,
                delivery=DeliveryStatus.REJECTED,
                reason=rejection.reason,
                send_seq=send_seq,
            )
            raise errors.ProviderRejected(verification_id, rejection.reason)
        # Call ids are opaque: when the one callee's id does not end in its number, take the only id.
        call_id = placement.call_id_for(phone.national) or (
            placement.accepted[0] if len(placement.accepted) == 1 else None
        )
        if call_id is None:
            raise await self._unplaced(verification_id, send_seq, first, "no call id in the answer", True)
        now = self._clock.now()
        answer = await self._store.commit_send(
            verification_id,
            now,
            send_seq,
            code_hash,
            call_id,
            expires_at=now + timedelta(seconds=ttl),
            check_outcome_at=now + timedelta(seconds=self._settings.reconcile_after_seconds),
        )
        bound.info("call.placed", outcome=answer.verdict)
        metrics.CALLS.labels("placed").inc()

    async def _unplaced(
        self, verification_id: str, send_seq: int, first: bool, why: str, may_have_rung: bool
    ) -> errors.ProviderUnavailable:
        """Record a placement that failed or cannot be tracked, and say so as provider_unavailable."""
        log.warning(
            "call.placement_failed",
            verification_id=verification_id,
            send=send_seq,
            error=why,
            may_have_rung=may_have_rung,
        )
        metrics.CALLS.labels("unavailable").inc()
        if first:
            await self._store.fail_send(
                verification_id,
                self._clock.now(),
                fail_verification=True,
                delivery=DeliveryStatus.FAILED,
                reason=f"provider unavailable: {why}",
                send_seq=send_seq,
            )
        return errors.ProviderUnavailable(
            "the voice provider could not place the call; try again shortly",
            PROVIDER_RETRY_AFTER_SECONDS,
            verification_id,
            call_may_have_rung=may_have_rung,
        )

    async def cancel(self, verification_id: str) -> Verification:
        answer = await self._store.cancel(verification_id, self._clock.now())
        self._raise_unless(answer, "canceled", verification_id)
        log.info("verification.canceled", verification_id=verification_id)
        return await self.get(verification_id)

    async def verify(self, verification_id: str, code: str) -> VerifyResult:
        """Check a code: the attempt is counted atomically first, then the hash is compared."""
        if not code.isascii() or not code.isdigit():
            raise errors.InvalidCodeFormat("the code must be digits only")
        answer = await self._store.reserve_attempt(verification_id, self._clock.now(), len(code))
        if answer.verdict == "bad_length":
            raise errors.InvalidCodeFormat(f"the code must have {answer.details[0]} digits")
        if answer.verdict == "no_attempts_left":
            raise errors.NoAttemptsLeft("every attempt for this verification is used")
        self._raise_unless(answer, "reserved", verification_id)
        _attempt, code_hash, generation = answer.details
        correct = bool(code_hash) and await self._hashing.matches(verification_id, code, code_hash)
        result = await self._store.record_result(verification_id, self._clock.now(), generation, correct)
        self._raise_unless(result, ("approved", "wrong", "max_attempts_reached"), verification_id)
        log.info("verification.checked", verification_id=verification_id, outcome=result.verdict)
        metrics.CODE_CHECKS.labels(result.verdict).inc()
        return VerifyResult(valid=result.verdict == "approved", verification=await self.get(verification_id))

    async def get(self, verification_id: str) -> Verification:
        verification = await self._store.get(verification_id)
        now = self._clock.now()
        retention = timedelta(seconds=self._settings.retention_seconds)
        if verification is None or now >= verification.expires_at + retention:
            raise errors.VerificationNotFound(verification_id)
        return verification.as_of(now)

    def authenticate_callback(self, verification_id: str, send_seq: int, presented: Iterable[str]) -> None:
        """Accept the callback if any presented credential is this call's; check before any I/O."""
        if not any(self._signer.is_valid(verification_id, send_seq, p) for p in presented if p):
            metrics.CALLBACKS.labels("forged").inc()
            raise errors.CallbackRejected("the callback credential is missing or wrong")

    async def record_callback(
        self, verification_id: str, send_seq: int, report: CallbackReport
    ) -> CallbackResult:
        """Record an authenticated call outcome; duplicates, late and stale reports change nothing."""
        answer = await self._store.record_delivery(
            verification_id,
            self._clock.now(),
            send_seq,
            report.call_id,
            DeliveryStatus(report.status.value),
            report.provider_status,
            report.duration_seconds,
        )
        if answer.verdict == "not_found":
            raise errors.VerificationNotFound(verification_id)
        outcome = {"recorded": "recorded", "ignored": "duplicate", "stale": "stale"}[answer.verdict]
        metrics.CALLBACKS.labels(outcome).inc()
        if outcome == "recorded" and report.status is not None:
            metrics.CALL_OUTCOMES.labels(report.status.value, "callback").inc()
        log.info(
            "call.callback",
            verification_id=verification_id,
            send=send_seq,
            status=report.status.value,
            outcome=outcome,
        )
        return CallbackResult(outcome=outcome, verification_id=verification_id)

    async def reconcile_due_calls(self, limit: int = 50) -> int:
        """Ask the provider about calls whose callback is overdue; returns how many were looked at.

        Callbacks can be lost; the call report is the provider's record of truth, so calls still
        open ``reconcile_after_seconds`` after placement are read from it until they end.
        """
        now = self._clock.now()
        lease = now + timedelta(seconds=max(60.0, 6 * self._settings.reconcile_interval_seconds))
        due = await self._store.claim_due_calls(now, limit, lease)
        for verification_id, send_seq in due:
            await self._reconcile_call(verification_id, send_seq, now)
        return len(due)

    async def _reconcile_call(self, verification_id: str, send_seq: int, now: datetime) -> None:
        verification = await self._store.get(verification_id)
        delivery = verification.delivery if verification else None
        if (
            delivery is None
            or delivery.send_seq != send_seq
            or delivery.status.is_final
            or not delivery.call_id
        ):
            await self._store.forget_call(verification_id, send_seq)
            return
        bound = log.bind(verification_id=verification_id, send=send_seq)
        if (now - delivery.updated_at).total_seconds() > self._settings.reconcile_give_up_seconds:
            bound.warning("call.outcome_unknown")
            await self._store.forget_call(verification_id, send_seq)
            return
        retry_at = now + timedelta(seconds=self._settings.reconcile_interval_seconds)
        try:
            report = await self._caller.get_report(delivery.call_id)
        except autocall.AutocallError as exc:
            bound.info("call.report_unavailable", error=type(exc).__name__)
            await self._store.reschedule_call(verification_id, send_seq, retry_at)
            return
        if report.status is None:
            await self._store.reschedule_call(verification_id, send_seq, retry_at)
            return
        answer = await self._store.record_delivery(
            verification_id,
            now,
            send_seq,
            delivery.call_id,
            DeliveryStatus(report.status.value),
            report.provider_status or "",
            report.duration_seconds,
        )
        bound.info("call.reconciled", status=report.status.value, outcome=answer.verdict)
        if answer.verdict == "recorded":
            metrics.CALL_OUTCOMES.labels(report.status.value, "report").inc()

    @staticmethod
    def _raise_unless(answer: ScriptAnswer, expected: str | tuple[str, ...], verification_id: str) -> None:
        """Turn a script's refusal into the domain error it means."""
        if answer.verdict in ((expected,) if isinstance(expected, str) else expected):
            return
        if answer.verdict == "not_found":
            raise errors.VerificationNotFound(verification_id)
        if answer.verdict == "not_pending":
            raise errors.NotPending(VerificationStatus(answer.details[0]))
        raise RuntimeError(f"unexpected store answer {answer.verdict!r}")
