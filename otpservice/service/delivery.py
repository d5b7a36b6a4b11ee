"""Delivery tracking: what became of each call, from the provider's callbacks or its call reports.

Callbacks are at-least-once at best: duplicated, late, out of order, about another call, or never
sent. Every placed call therefore stays on its shard's schedule until its outcome is known; the
reconciler asks the provider's call report about calls whose callback is overdue, and settles
placements nobody recorded (a process that died between placing a call and recording it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import structlog

from otpservice.adapters.autocall import models as autocall
from otpservice.adapters.autocall.callback import CallbackReport
from otpservice.adapters.storage.keys import SHARDS
from otpservice.adapters.storage.schedule import CallSchedule, ScheduledCall
from otpservice.adapters.storage.store import VerificationStore
from otpservice.domain import errors
from otpservice.domain.callback_auth import CallbackSigner
from otpservice.domain.clock import Clock
from otpservice.domain.verification import DeliveryStatus
from otpservice.service import metrics
from otpservice.service.ports import VoiceCaller
from otpservice.settings import Settings

log = structlog.get_logger(__name__)

# At most BATCH due calls of one shard per round, and CONCURRENCY checks at once.
BATCH = 50
CONCURRENCY = 8
# An unreachable provider is asked less and less often, up to this.
MAX_BACKOFF_SECONDS = 60.0


def claim_lease_seconds(settings: Settings) -> float:
    """How long a claimed call stays hidden from other workers: longer than one check can take
    (a call is claimed only when a check slot is free for it, so its check starts at once)."""
    one_check = _report_bound_seconds(settings) + 3 * settings.storage_bound_seconds
    return one_check + settings.reconcile_interval_seconds


def _report_bound_seconds(settings: Settings) -> float:
    """The longest asking for one call's report may take: a token, then the report, each within one
    exchange. (A 401 and a second token and report past it count as the provider being down.)"""
    return 2 * settings.autocall.exchange_bound_seconds


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """What a callback did: ``recorded``, ``duplicate`` (nothing new) or ``stale`` (another call)."""

    outcome: str
    verification_id: str


class ProviderDown(Exception):
    """The provider could not be asked; the round backs off."""


class DeliveryTracker:
    """Records call outcomes and finds the ones whose callbacks never came."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: VerificationStore,
        schedule: CallSchedule,
        caller: VoiceCaller,
        clock: Clock,
        signer: CallbackSigner,
    ):
        self._settings = settings
        self._store = store
        self._schedule = schedule
        self._caller = caller
        self._clock = clock
        self._signer = signer
        self._backoff = settings.reconcile_interval_seconds

    def authenticate_callback(self, verification_id: str, send_seq: int, presented: Iterable[str]) -> None:
        """Accept the callback if any presented credential is this call's; check before any I/O."""
        if not any(self._signer.is_valid(verification_id, send_seq, p) for p in presented if p):
            metrics.CALLBACKS.labels("forged").inc()
            raise errors.CallbackRejected("the callback credential is missing or wrong")

    async def record_callback(
        self, verification_id: str, send_seq: int, report: CallbackReport
    ) -> CallbackResult:
        """Record an authenticated call outcome; duplicates, stale and foreign reports change nothing."""
        update = await self._store.record_delivery(
            verification_id,
            self._clock.now(),
            send_seq,
            report.call_id,
            DeliveryStatus(report.status.value),
            report.provider_status,
            report.duration_seconds,
        )
        metrics.CALLBACKS.labels(update.outcome).inc()
        if update.outcome == "recorded":
            metrics.CALL_OUTCOMES.labels(report.status.value, "callback").inc()
        log.info(
            "call.callback",
            verification_id=verification_id,
            send=send_seq,
            status=report.status.value,
            outcome=update.outcome,
        )
        # A report about another call is answered like one about an older call: nothing to do.
        outcome = {"recorded": "recorded", "duplicate": "duplicate"}.get(update.outcome, "stale")
        return CallbackResult(outcome=outcome, verification_id=verification_id)

    async def reconcile_round(self) -> float:
        """Look at the due calls of every shard (up to BATCH each); answers how long to wait before
        the next round.

        Why claim no more calls than there are free check slots: a call's lease runs from its claim,
        and a call claimed to wait behind other shards' checks could outlive its lease, so that
        another worker asked the provider about it again at the same time.
        """
        slots = asyncio.Semaphore(CONCURRENCY)
        provider_down = asyncio.Event()
        checks: list[asyncio.Task[None]] = []
        full = False
        try:
            for shard in range(SHARDS):
                claimed = 0
                while claimed < BATCH and not provider_down.is_set():
                    free = await _take_free(slots, BATCH - claimed)
                    if provider_down.is_set():  # found down while this waited for a slot
                        for _ in range(free):
                            slots.release()
                        break
                    now = self._clock.now()
                    lease_until = now + timedelta(seconds=claim_lease_seconds(self._settings))
                    due = await self._schedule.claim_due(shard, now, free, lease_until)
                    for _ in range(free - len(due)):
                        slots.release()
                    checks += [asyncio.create_task(self._check(call, slots, provider_down)) for call in due]
                    claimed += len(due)
                    if len(due) < free:
                        break
                full = full or claimed == BATCH
        finally:  # the checks begun finish (and are seen) whatever stopped the claiming
            ended = await asyncio.gather(*checks, return_exceptions=True)
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome
        if provider_down.is_set():
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)
            log.warning(
                "reconcile.provider_unreachable",
                retry_in_seconds=self._backoff,
                host=urlsplit(self._settings.autocall.url).netloc,
                operation="report",
            )
            return self._backoff
        self._backoff = self._settings.reconcile_interval_seconds
        # a full batch may mean more are due: go on at once
        return 0.0 if full else self._backoff

    async def _check(
        self, call: ScheduledCall, slot: asyncio.Semaphore, provider_down: asyncio.Event
    ) -> None:
        """Check one claimed call in the slot taken for it; a provider found down puts it off."""
        try:
            if not provider_down.is_set():
                try:
                    await self._reconcile_call(call)
                    return
                except ProviderDown:
                    provider_down.set()
            await self._schedule.reschedule(call, self._retry_at(backoff=True))
        finally:
            slot.release()

    def _retry_at(self, *, backoff: bool = False) -> datetime:
        """The next try counts from when this check ended, not from when the round began."""
        wait = (
            min(self._backoff * 2, MAX_BACKOFF_SECONDS)
            if backoff
            else self._settings.reconcile_interval_seconds
        )
        return self._clock.now() + timedelta(seconds=wait)

    async def _reconcile_call(self, call: ScheduledCall) -> None:
        verification = await self._store.get(call.verification_id)
        if verification is None:
            await self._schedule.forget(call)
            return
        delivery = verification.delivery
        bound = log.bind(verification_id=call.verification_id, send=call.send_seq)
        now = self._clock.now()
        if delivery.send_seq < call.send_seq:
            # the placement's deadline passed and nobody recorded what became of it
            bound.warning("call.placement_unrecorded")
            reason = "the placement's outcome was never recorded (the process placing it stopped)"
            # The script takes the call off the schedule when it settles it; when the placement was
            # resolved meanwhile (a late repair, a callback), the schedule entry is its resolver's.
            await self._store.placement_unknown(call.verification_id, now, call.send_seq, reason)
            return
        if delivery.send_seq > call.send_seq or delivery.status.is_final or not delivery.call_id:
            await self._schedule.forget(call)
            return
        if (now - delivery.updated_at).total_seconds() > self._settings.reconcile_give_up_seconds:
            bound.warning("call.outcome_unknown")
            await self._schedule.forget(call)
            return
        try:
            # the whole exchange within what the claim's lease counts on (the client's timeouts
            # bound each phase only)
            async with asyncio.timeout(_report_bound_seconds(self._settings)):
                report = await self._caller.get_report(delivery.call_id)
        except TimeoutError as exc:
            bound.info("call.report_unavailable", error="timeout")
            raise ProviderDown from exc
        except autocall.CallReportNotFound:
            report = None
        except (autocall.ProviderUnavailable, autocall.ProviderAuthFailed) as exc:
            bound.info("call.report_unavailable", error=type(exc).__name__)
            raise ProviderDown from exc
        except autocall.AutocallError as exc:
            bound.info("call.report_unavailable", error=type(exc).__name__)
            report = None
        if report is None or report.status is None:
            await self._schedule.reschedule(call, self._retry_at())
            return
        update = await self._store.record_delivery(
            call.verification_id,
            self._clock.now(),
            call.send_seq,
            delivery.call_id,
            DeliveryStatus(report.status.value),
            report.provider_status or "",
            report.duration_seconds,
        )
        bound.info("call.reconciled", status=report.status.value, outcome=update.outcome)
        if update.outcome == "recorded":
            metrics.CALL_OUTCOMES.labels(report.status.value, "report").inc()


async def _take_free(slots: asyncio.Semaphore, most: int) -> int:
    """Wait for one free slot, then take every other free one without waiting (up to ``most``)."""
    await slots.acquire()
    taken = 1
    while taken < most and not slots.locked():
        await slots.acquire()
        taken += 1
    return taken
