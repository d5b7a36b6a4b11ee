"""Every replica's "now" comes from the storage server's clock, whatever its own clock says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog.testing
from prometheus_client import REGISTRY

from otpservice.adapters.storage.clock import StorageClock
from otpservice.adapters.storage.connection import connect
from otpservice.adapters.storage.scripts import Storage
from otpservice.redis_url import parse_redis_url
from tests.support.redis_servers import standalone_server, sync_client


class SkewedClock:
    """A machine's wall clock that is ``offset`` off."""

    def __init__(self, offset: timedelta):
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def storage_for(url: str) -> Storage:
    return Storage(connect(parse_redis_url(url), timeout_seconds=0.5), operation_timeout_seconds=1.0)


@pytest.fixture
async def storage(redis_url: str) -> AsyncIterator[Storage]:
    storage = storage_for(redis_url)
    try:
        yield storage
    finally:
        await storage.close()


def server_now(redis_url: str) -> datetime:
    seconds, micros = sync_client(redis_url).time()
    return datetime.fromtimestamp(seconds + micros / 1_000_000, UTC)


async def test_two_replicas_with_skewed_clocks_agree_on_the_time(storage: Storage, redis_url: str) -> None:
    """Two workers whose own wall clocks are 5 s ahead and 5 s behind (and whose monotonic clocks
    started at different moments) tell the same time, the storage server's, within milliseconds."""
    ahead = StorageClock(storage, fallback=SkewedClock(timedelta(seconds=5)))
    behind = StorageClock(
        storage, monotonic=lambda: time.monotonic() + 1_000, fallback=SkewedClock(timedelta(seconds=-5))
    )
    assert await ahead.synchronise()
    assert await behind.synchronise()
    reference = server_now(redis_url)
    assert abs(ahead.now() - reference) < timedelta(milliseconds=50)
    assert abs(behind.now() - ahead.now()) < timedelta(milliseconds=20)


async def test_until_it_has_read_the_storage_clock_the_machine_clock_answers(storage: Storage) -> None:
    """Before its first reading a clock answers the machine's own time (storage unreachable at start)."""
    skewed = SkewedClock(timedelta(hours=1))
    clock = StorageClock(storage, fallback=skewed)
    assert not clock.synchronised
    assert abs(clock.now() - skewed.now()) < timedelta(seconds=1)


async def test_a_clock_whose_storage_is_gone_keeps_the_time_it_last_read() -> None:
    """Storage that stops answering fails a reading fast, and the clock goes on from its last one."""
    with standalone_server() as server:
        storage = storage_for(server.url)
        try:
            clock = StorageClock(storage, fallback=SkewedClock(timedelta(hours=1)))
            assert await clock.synchronise()
            server.stop()
            started = time.monotonic()
            assert not await clock.synchronise()
            assert time.monotonic() - started < 3
            assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=1)
        finally:
            await storage.close()


class SteppedMonotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_reading_a_little_behind_the_time_already_told_holds_the_clock_still(
    storage: Storage,
) -> None:
    """When a new reading is a little behind the time the clock has told (its monotonic clock ran
    fast), the clock holds still until it catches up rather than going back."""
    monotonic = SteppedMonotonic()
    clock = StorageClock(storage, monotonic=monotonic)
    assert await clock.synchronise()
    monotonic.now += 1.5  # this worker's monotonic clock ran 1.5 s ahead of the server's
    told = clock.now()
    assert await clock.synchronise()  # the server says it is 1.5 s earlier than that
    assert clock.now() == told
    monotonic.now += 2
    assert clock.now() > told


async def test_a_reading_far_behind_steps_the_clock_back_rather_than_stopping_time(storage: Storage) -> None:
    """A reading minutes behind the time told (a failover to a primary whose clock is off) steps the
    clock back: holding it still that long would stop expiry, cooldowns and every schedule."""
    monotonic = SteppedMonotonic()
    clock = StorageClock(storage, monotonic=monotonic)
    assert await clock.synchronise()
    monotonic.now += 600
    told = clock.now()
    assert await clock.synchronise()
    assert told - clock.now() > timedelta(seconds=590)


async def test_the_first_reading_does_not_take_back_the_machine_time_already_told(storage: Storage) -> None:
    """Times told from the machine's clock before the first reading count as told: a storage clock a
    little behind holds still instead of stamping later changes before earlier ones."""
    clock = StorageClock(storage, fallback=SkewedClock(timedelta(seconds=1)))
    told = clock.now()
    assert await clock.synchronise()
    assert clock.now() >= told


async def test_a_slow_storage_server_is_still_the_clock(storage: Storage, redis_url: str) -> None:
    """A reading whose round trip took 300 ms (a storage server far away) is used: its error is at
    most half of it, far less than the replicas' own clocks may differ."""
    ticks = iter(float(n) * 0.3 for n in range(1_000))
    clock = StorageClock(storage, monotonic=lambda: next(ticks), fallback=SkewedClock(timedelta(hours=1)))
    assert await clock.synchronise()
    assert clock.synchronised


async def test_the_keeper_reads_again_soon_after_a_failed_start_and_not_at_once_after_a_good_one(
    storage: Storage,
) -> None:
    """Kept in sync, a clock read at start is not read again at once (the next reading is a minute
    away), while one that could not be read at start is read again within seconds."""

    def readings() -> float:
        return REGISTRY.get_sample_value("otp_storage_operations_total", {"operation": "time"}) or 0

    read, unread = StorageClock(storage), StorageClock(storage)
    assert await read.synchronise()
    stop = asyncio.Event()
    keepers = [asyncio.create_task(clock.keep_synchronised(stop)) for clock in (read, unread)]
    try:
        before = readings()
        async with asyncio.timeout(3):
            while not unread.synchronised:  # noqa: ASYNC110 - nothing signals a reading
                await asyncio.sleep(0.02)
        assert readings() - before == 3  # the unread clock's one reading (three round trips)
    finally:
        stop.set()
        await asyncio.gather(*keepers)


async def test_a_skewed_machine_clock_is_warned_of_once_not_at_every_reading(storage: Storage) -> None:
    """A worker whose own clock is 5 s off the storage clock logs clock.skewed once across readings
    taken every few seconds, not at each of them, and once again when the skew comes back."""
    machine = SkewedClock(timedelta(seconds=5))
    clock = StorageClock(storage, fallback=machine)
    with structlog.testing.capture_logs() as logs:
        for offset in (5, 5, 0, 0, 5, 5):  # skewed, mended, skewed again
            machine.offset = timedelta(seconds=offset)
            assert await clock.synchronise()
    assert [line["event"] for line in logs].count("clock.skewed") == 2


async def test_an_offset_hovering_at_the_warning_threshold_is_not_warned_of_at_every_reading(
    storage: Storage,
) -> None:
    """An offset jittering just above and below a second (its readings' round trips) is warned of once."""
    machine = SkewedClock(timedelta(seconds=1.05))
    clock = StorageClock(storage, fallback=machine)
    with structlog.testing.capture_logs() as logs:
        for offset in (1.05, 0.95) * 6:
            machine.offset = timedelta(seconds=offset)
            assert await clock.synchronise()
    assert [line["event"] for line in logs].count("clock.skewed") == 1
