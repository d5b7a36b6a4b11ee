"""The background loop that finds call outcomes whose callbacks never came."""

from __future__ import annotations

import asyncio

import structlog

from otpservice.service.delivery import DeliveryTracker

log = structlog.get_logger(__name__)


async def reconcile_forever(tracker: DeliveryTracker, interval_seconds: float) -> None:
    """Round after round, read the provider's reports of overdue calls; never dies of an error."""
    while True:
        try:
            pause = await tracker.reconcile_round()
        except Exception as exc:  # a failed round (storage down, a bug) must not stop reconciliation
            log.error("reconcile.failed", error=type(exc).__name__)
            pause = interval_seconds
        await asyncio.sleep(pause)
