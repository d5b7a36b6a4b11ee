"""The loop every background job of a worker runs in: round after round until asked to stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


async def run_rounds(
    name: str,
    one_round: Callable[[], Awaitable[float]],
    interval_seconds: float,
    stop: asyncio.Event,
    wake: asyncio.Event | None = None,
) -> None:
    """Run ``one_round`` (which answers how long to pause) until ``stop`` is set; never die of an error.
    ``wake`` cuts a pause short (work arrived).

    Stopping lets the current round finish rather than cancelling it in the middle of a storage
    command (a connection cancelled while it opens is left open).
    """
    while not stop.is_set():
        if wake is not None:
            wake.clear()
        try:
            pause = await one_round()
        except Exception as exc:  # a failed round (storage down, a bug) must not stop the job
            log.error(f"{name}.failed", error=type(exc).__name__)
            pause = interval_seconds
        waits = [asyncio.ensure_future(stop.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        _, pending = await asyncio.wait(waits, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
