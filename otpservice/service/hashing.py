"""Runs code hashing off the event loop, in a thread pool bounded to the core count.

argon2 releases the GIL, so threads give real parallelism; more threads than cores only queue work
and cost ~19 MiB each per hash in flight, which is why the pool is bounded rather than anyio's 40.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from otpservice.domain.codes import CodeHasher


class HashingPool:
    """Async front of a :class:`CodeHasher`; owned (created and shut down) by the app's lifespan."""

    def __init__(self, hasher: CodeHasher, workers: int):
        self._hasher = hasher
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")

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
