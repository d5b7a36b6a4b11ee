"""The hashing pool admits as many checks as its threads and queue hold, and refuses the next at once."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from otpservice.domain.codes import CodeHasher
from otpservice.domain.errors import Overloaded
from otpservice.service.hashing import GIL_SWITCH_INTERVAL_SECONDS, HASH_THREAD_NICENESS, HashingPool
from otpservice.settings import Argon2Settings


def test_a_check_beyond_threads_and_queue_is_refused_and_a_freed_place_is_taken_again() -> None:
    """With one thread and a queue of one, a third check is refused while two are admitted, and
    admitted again once one of them is done."""
    pool = HashingPool(CodeHasher(b"p" * 32, Argon2Settings(time_cost=1, memory_cost_kib=8)), 1, queue=1)
    try:
        with pool.admission():
            with pool.admission():
                assert _full(pool)
                with pytest.raises(Overloaded), pool.admission():
                    pass
            assert not _full(pool)
            with pool.admission():
                pass
    finally:
        pool.close()


def _full(pool: HashingPool) -> bool:
    return pool.full


class _SlowableHasher(CodeHasher):
    """The real hasher, plus a delay that can be raised: a machine that got busier since the start."""

    delay = 0.0

    def hash(self, verification_id: str, code: str) -> str:
        time.sleep(self.delay)
        return super().hash(verification_id, code)


async def test_the_queue_shrinks_when_hashes_take_longer_than_at_start() -> None:
    """Left unconfigured, the queue holds about 250 ms of hashes as they take now, not as they took
    at start: once each hash takes 50 ms, a single thread admits only a few waiting checks."""
    hasher = _SlowableHasher(b"p" * 32, Argon2Settings(time_cost=1, memory_cost_kib=8))
    pool = HashingPool(hasher, 1)
    try:
        await pool.size_queue()
        at_start = pool.queue
        assert at_start is not None
        assert at_start > 50
        hasher.delay = 0.05
        for _ in range(20):
            await pool.hash("vf_x", "123456")
        assert pool.queue is not None
        assert 1 <= pool.queue <= 8
    finally:
        pool.close()


async def test_a_failing_hash_reaches_the_awaiting_check() -> None:
    """An error inside a hashing thread is raised to the request that awaited it; the thread lives on."""
    hasher = _SlowableHasher(b"p" * 32, Argon2Settings(time_cost=1, memory_cost_kib=8))
    pool = HashingPool(hasher, 1, queue=1)
    try:
        hasher.delay = -1  # time.sleep refuses it
        with pytest.raises(ValueError, match="non-negative"):
            await pool.hash("vf_x", "123456")
        hasher.delay = 0
        encoded = await pool.hash("vf_x", "123456")
        assert await pool.matches("vf_x", "123456", encoded)
    finally:
        pool.close()


class _PriorityNotingHasher(CodeHasher):
    """The real hasher, noting the nice value of the thread that hashed."""

    niceness: int | None = None

    def hash(self, verification_id: str, code: str) -> str:
        self.niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return super().hash(verification_id, code)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
async def test_hash_threads_yield_the_cores_to_the_event_loop() -> None:
    """Hash threads run at a lower CPU priority (a higher nice value) than the event loop's thread."""
    hasher = _PriorityNotingHasher(b"p" * 32, Argon2Settings(time_cost=1, memory_cost_kib=8))
    pool = HashingPool(hasher, 1, queue=1)
    try:
        await pool.hash("vf_x", "123456")
    finally:
        pool.close()
    loop_niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert hasher.niceness == min(19, loop_niceness + HASH_THREAD_NICENESS)


async def test_a_hash_thread_waits_at_most_a_tenth_of_a_millisecond_for_the_interpreter_lock() -> None:
    """With hash threads running, the interpreter hands its lock to a waiting thread within 0.1 ms,
    so a thread is not kept from its next hash while the event loop runs Python."""
    pool = HashingPool(CodeHasher(b"p" * 32, Argon2Settings(time_cost=1, memory_cost_kib=8)), 1, queue=1)
    try:
        await pool.hash("vf_x", "123456")
        assert sys.getswitchinterval() <= GIL_SWITCH_INTERVAL_SECONDS == 0.0001
    finally:
        pool.close()
