"""The loop every background job of a worker runs in: round after round until asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


async def run_rounds(
    name: str, one_round: Callable[[], Awaitable[float]], interval_seconds: float, stop: asyncio.Event
) -> None:
    """Run ``one_round`` (which answers how long to pause) until ``stop`` is set; never die of an error.

    Stopping lets the current round finish rather than cancelling it in the middle of a storage
    command (a connection cancelled while it opens is left open).
    """
    while not stop.is_set():
        try:
            pause = await one_round()
        except Exception as exc:  # a failed round (storage down, a bug) must not stop the job
            log.error(f"{name}.failed", error=type(exc).__name__)
            pause = interval_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=pause)
