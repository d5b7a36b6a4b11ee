"""The background loop that finds call outcomes whose callbacks never came."""

from __future__ import annotations

import asyncio

from otpservice.service.background import run_rounds
from otpservice.service.delivery import DeliveryTracker


async def reconcile_forever(tracker: DeliveryTracker, interval_seconds: float, stop: asyncio.Event) -> None:
    """Round after round, read the provider's reports of overdue calls, until ``stop`` is set."""
    await run_rounds("reconcile", tracker.reconcile_round, interval_seconds, stop)
