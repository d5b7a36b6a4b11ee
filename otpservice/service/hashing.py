"""Runs code hashing off the event loop, in a thread pool bounded to the core count.

argon2 releases the GIL, so threads give real parallelism; more threads than cores only queue work
and cost ~19 MiB each per hash in flight, which is why the pool is bounded rather than anyio's 40.
Checks beyond what the threads and a short queue can take are refused at once (load shedding):
an unbounded queue makes every caller wait, until login screens time out together.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from otpservice.domain import errors
from otpservice.domain.codes import CodeHasher

# With no queue length configured, a check waits at most about this long for a thread.
QUEUE_SECONDS = 0.25


class HashingPool:
    """Async front of a :class:`CodeHasher`; owned (created and shut down) by the app's lifespan."""

    def __init__(self, hasher: CodeHasher, workers: int, queue: int | None = None):
        self._hasher = hasher
        self._workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._queue = queue
        self._admitted = 0  # checks holding or waiting for a thread; only the event loop changes it

    @property
    def queue(self) -> int | None:
        """How many checks may wait for a thread (None until :meth:`size_queue` when not configured)."""
        return self._queue

    async def size_queue(self) -> float:
        """Time one hash, and when no queue length was configured, allow ~QUEUE_SECONDS of waiting.

        Run once at start; answers the seconds a hash took (when sizing, the fastest of three: the
        first pays for touching the argon2 memory, and a busy start should not shrink the queue).
        """
        timings = []
        # With a queue length configured one hash only warms the pool (touching the argon2 memory).
        for _ in range(3 if self._queue is None else 1):
            started = time.perf_counter()
            await self.hash("vf_sizing", "0" * 6)
            timings.append(time.perf_counter() - started)
        seconds = min(timings)
        if self._queue is None:
            self._queue = self._workers * max(1, math.floor(QUEUE_SECONDS / max(seconds, 1e-4)))
        return seconds

    @property
    def full(self) -> bool:
        """Every thread busy and the queue full: a check arriving now would be refused."""
        return self._admitted >= self._workers + (
            self._queue if self._queue is not None else self._workers * 4
        )

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold a place for one check, or raise Overloaded at once when the threads and queue are full."""
        if self.full:
            raise errors.Overloaded()
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def hash(self, verification_id: str, code: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._hasher.hash, verification_id, code)

    async def matches(self, verification_id: str, code: str, encoded_hash: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._hasher.matches, verification_id, code, encoded_hash
        )

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
