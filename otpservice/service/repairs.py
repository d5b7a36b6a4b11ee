"""Writes that must land even though storage failed when the request wanted them.

When storage fails half-way through a request, some facts are known only to this process: a call
was placed (and its id), a call was never placed, a reserved attempt was given up. The request
answers at once and says so; the fact is handed here and written again in the background, with
backoff, until storage takes it or ``give_up_seconds`` pass. Every such write is idempotent, so
writing it twice, or after a late copy of the original landed, is harmless.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import structlog

from otpservice.domain.errors import StorageUnavailable, VerificationNotFound
from otpservice.service import metrics

log = structlog.get_logger(__name__)


class RepairQueue:
    """Background retries of idempotent storage writes; owned by the app's lifespan."""

    def __init__(self, *, give_up_seconds: float = 600.0, first_delay: float = 0.2, max_delay: float = 5.0):
        self._give_up = give_up_seconds
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, what: str, write: Callable[[], Awaitable[object]], **context: object) -> None:
        """Retry ``write`` in the background until it succeeds; ``what`` and ``context`` name it in logs."""
        task = asyncio.get_running_loop().create_task(self._until_written(what, write, context))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def write(
        self, what: str, write: Callable[[], Awaitable[object]], *, now: bool = True, **context: object
    ) -> None:
        """Write at once, falling back to the background if storage fails.

        ``now=False``: storage has just failed for this request, so go to the background directly
        instead of waiting on it a second time.
        """
        if now:
            try:
                await write()
                return
            except StorageUnavailable:
                pass
        self.submit(what, write, **context)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def _until_written(
        self, what: str, write: Callable[[], Awaitable[object]], context: dict[str, object]
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._give_up
        delay = self._first_delay
        tries = 0
        try:
            while True:
                tries += 1
                try:
                    await write()
                except StorageUnavailable:
                    if loop.time() + delay > deadline:
                        log.error("repair.abandoned", repair=what, tries=tries, **context)
                        return
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not secrecy
                    delay = min(delay * 2, self._max_delay)
                    continue
                except VerificationNotFound:
                    # Storage lost the record meanwhile (a failover or restart dropped the last
                    # writes): nothing is left to repair. Not a bug; counted, for operators.
                    metrics.RECORDS_LOST.labels(what).inc()
                    log.warning("repair.record_lost", repair=what, tries=tries, **context)
                    return
                except Exception:  # a bug must not kill the loop silently
                    log.exception("repair.failed", repair=what, **context)
                    return
                if tries > 1:
                    log.info("repair.written", repair=what, tries=tries, **context)
                return
        except asyncio.CancelledError:
            # stopped at shutdown (close): most repairs nothing else retries, so a line names each
            log.error("repair.abandoned", repair=what, tries=tries, reason="shutdown", **context)
            raise

    async def close(self, grace_seconds: float = 2.0) -> None:
        """Give pending repairs a moment to land, then stop them, each logged as abandoned. The
        reconciler of a later start takes over placements nobody recorded; other repairs (a void,
        a budget given back, a code's write) are lost, and their log lines say which."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in set(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
