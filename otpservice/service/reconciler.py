"""The background loop that finds call outcomes whose callbacks never came."""

from __future__ import annotations

import asyncio

import structlog

from otpservice.service.verifications import VerificationService

log = structlog.get_logger(__name__)


async def reconcile_forever(service: VerificationService, interval_seconds: float) -> None:
    """Every ``interval_seconds``, read the provider's reports of overdue calls; never dies of an error."""
    while True:
        try:
            while await service.reconcile_due_calls() > 0:
                pass  # a full batch may mean more are due: keep going before sleeping
        except Exception as exc:  # a failed round must not stop reconciliation for good
            log.error("reconcile.failed", error=type(exc).__name__)
        await asyncio.sleep(interval_seconds)
