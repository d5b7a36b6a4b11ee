"""The background loop that finds call outcomes whose callbacks never came."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from otpservice.service.delivery import DeliveryTracker

log = structlog.get_logger(__name__)


async def reconcile_forever(tracker: DeliveryTracker, interval_seconds: float, stop: asyncio.Event) -> None:
    """Round after round, read the provider's reports of overdue calls, until ``stop`` is set.

    Never dies of an error. Stopping lets the current round finish rather than cancelling it in the
    middle of a storage command (a connection cancelled while it opens is left open).
    """
    while not stop.is_set():
        try:
            pause = await tracker.reconcile_round()
        except Exception as exc:  # a failed round (storage down, a bug) must not stop reconciliation
            log.error("reconcile.failed", error=type(exc).__name__)
            pause = interval_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=pause)
