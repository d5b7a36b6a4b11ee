"""Runs code hashing off the event loop, in a thread pool bounded to the core count.

argon2 releases the GIL, so threads give real parallelism; more threads than cores only queue work
and cost ~19 MiB each per hash in flight, which is why the pool is bounded rather than anyio's 40.
Checks beyond what the threads and a short queue can take are refused at once (load shedding):
an unbounded queue makes every caller wait, until login screens time out together.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from otpservice.domain import errors
from otpservice.domain.codes import CodeHasher

T = TypeVar("T")

# With no queue length configured, a check waits at most about this long for a thread.
QUEUE_SECONDS = 0.25
# Weight of the newest hash in the running estimate of how long one takes.
_NEWEST_WEIGHT = 0.1
# How much lower than the event loop's the hash threads' CPU priority is (a nice value; Linux gives
# each thread its own). When the cores are all busy, the loop (Redis round trips, /healthz, the
# refusals of shed checks) gets one first, and hashing takes what is left instead of delaying them.
HASH_THREAD_NICENESS = 5
# The longest the interpreter lets one thread keep the GIL while another waits for it (see HashThreads).
GIL_SWITCH_INTERVAL_SECONDS = 0.0001

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.cancelled():  # its request went away while the hash ran
        return
    if error is None:
        future.set_result(result)  # type: ignore[arg-type]
    else:
        future.set_exception(error)


def _lower_own_priority(by: int) -> None:
    """Raise the calling thread's nice value by ``by`` (only this thread's on Linux; a no-op where the
    platform cannot, since it only changes which work waits when the cores are all busy)."""
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + by)


class HashThreads:
    """A fixed set of threads taking jobs from one queue, each answering the event loop directly.

    Why not ``ThreadPoolExecutor`` with ``run_in_executor``: its hand-off (a semaphore, a work item,
    a concurrent future wrapped in an asyncio one, and their callbacks) cost ~60 us of CPU per job
    here, against ~25 us for a ``SimpleQueue`` and one ``call_soon_threadsafe``; every check pays it.
    The threads also time each job, which is what the adaptive queue length is computed from.
    """

    def __init__(self, workers: int, on_timed: Callable[[float], None]):
        # A hash thread needs the GIL for a moment between two hashes (to answer and take the next
        # job), and waits for it while the event loop runs Python: up to the interpreter's switch
        # interval, 5 ms by default, a fifth of a hash here. At 0.5 ms, /verify at 64 connections
        # kept 0.82 of the raw argon2 ceiling instead of 0.76 (four runs each, bench.verify_overload).
        # At 0.1 ms a start's hash begins 0.35 ms after it is queued instead of 0.88 (the loop goes
        # on building the provider call meanwhile), so POST /otp with an instant provider is 0.5 ms
        # faster (bench.start_latency --delays 0, two runs each); /verify under load is unchanged,
        # and with the cheapest argon2 a check costs ~0.04 ms more CPU (bench.verify_cpu).
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_SECONDS))
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._on_timed = on_timed
        self._threads = [
            threading.Thread(target=self._work, name=f"argon2-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, function, args))
        return future

    def _work(self) -> None:
        _lower_own_priority(HASH_THREAD_NICENESS)
        while (job := self._jobs.get()) is not None:
            loop, future, function, args = job
            started = time.perf_counter()
            result: Any = None
            error: BaseException | None = None
            try:
                result = function(*args)
            except BaseException as exc:  # handed to the awaiting request, never lost in this thread
                error = exc
            self._on_timed(time.perf_counter() - started)
            # RuntimeError: the loop closed meanwhile, and nobody awaits this any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result, error)

    def close(self) -> None:
        """Finish the jobs already queued, then stop every thread."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()


class HashingPool:
    """Async front of a :class:`CodeHasher`; owned (created and shut down) by the app's lifespan.

    The queue a check may wait in is ``queue`` long when configured; otherwise it is as long as the
    threads clear in about QUEUE_SECONDS, from a running estimate of how long a hash takes now (on a
    machine shared with other workers or processes a hash takes longer than when the pool started,
    and a queue sized at start would make checks wait twice as long as meant).
    """

    def __init__(self, hasher: CodeHasher, workers: int, queue: int | None = None):
        self._hasher = hasher
        self._workers = workers
        self._configured_queue = queue
        self._hash_seconds: float | None = None  # running estimate, updated by the threads
        self._threads = HashThreads(workers, self._timed)
        self._admitted = 0  # checks holding or waiting for a thread; only the event loop changes it

    def _timed(self, seconds: float) -> None:
        # Called from the hash threads; a float assignment is atomic, and a lost update only
        # delays the estimate by one hash.
        previous = self._hash_seconds
        self._hash_seconds = seconds if previous is None else previous + _NEWEST_WEIGHT * (seconds - previous)

    @property
    def queue(self) -> int | None:
        """How many checks may wait for a thread now (None before the first hash, when adaptive)."""
        if self._configured_queue is not None:
            return self._configured_queue
        if self._hash_seconds is None:
            return None
        return self._workers * max(1, math.floor(QUEUE_SECONDS / max(self._hash_seconds, 1e-4)))

    async def size_queue(self) -> float:
        """Time hashes at start, seeding the estimate the adaptive queue length comes from.

        Answers the seconds a hash took (the fastest of three: the first pays for touching the
        argon2 memory, and a busy start should not shrink the queue). With a queue length
        configured, one hash only warms the pool.
        """
        timings = []
        for _ in range(3 if self._configured_queue is None else 1):
            started = time.perf_counter()
            await self.hash("vf_sizing", "0" * 6)
            timings.append(time.perf_counter() - started)
        self._hash_seconds = min(timings)
        return self._hash_seconds

    @property
    def full(self) -> bool:
        """Every thread busy and the queue full: a check arriving now would be refused."""
        waiting = self.queue
        return self._admitted >= self._workers + (waiting if waiting is not None else self._workers * 4)

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

    def hash(self, verification_id: str, code: str) -> asyncio.Future[str]:
        """The code's hash, queued for a thread now rather than when first awaited: a start hashes
        while it goes on to place its call, and a coroutine would only queue it once the start
        first waits (after building the provider request, ~1-2 ms later)."""
        return self._threads.run(self._hasher.hash, verification_id, code)

    async def matches(self, verification_id: str, code: str, encoded_hash: str) -> bool:
        return await self._threads.run(self._hasher.matches, verification_id, code, encoded_hash)

    def close(self) -> None:
        self._threads.close()
