"""The whole API contract on a real three-master Redis Cluster (CLUSTER ADDSLOTSRANGE, CLUSTER MEET).

Every verification's keys share one hash tag and every script touches one slot; the same tests
that run on one server run here unchanged: the whole flow, callbacks, reconciliation of lost
callbacks, and both races.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio.cluster import RedisCluster

from otpservice.adapters.storage.clock import CLOCK_KEY, StorageClock
from otpservice.adapters.storage.connection import connect
from otpservice.adapters.storage.scripts import Storage
from otpservice.redis_url import parse_redis_url
from tests.support.contract import contract_tests
from tests.support.redis_servers import cluster_setup

globals().update(contract_tests())


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Cluster of three primaries for this module's tests: ``redis+cluster://...``."""
    with cluster_setup() as cluster:
        yield cluster.url


async def test_every_replica_reads_the_time_of_one_node(redis_url: str) -> None:
    """In a Cluster the storage clock is that of the node serving one fixed slot, read by every replica."""
    storage = Storage(connect(parse_redis_url(redis_url), timeout_seconds=1.0), operation_timeout_seconds=2.0)
    try:
        clock = StorageClock(storage)
        assert await clock.synchronise()
        assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=1)  # one machine, one clock
        client = storage.client
        assert isinstance(client, RedisCluster)
        seconds, _ = await client.execute_command("TIME", target_nodes=client.get_node_from_key(CLOCK_KEY))
        assert abs(int(seconds) - clock.now().timestamp()) <= 1
    finally:
        await storage.close()


async def test_commands_whose_connections_the_cluster_client_closes_are_storage_unavailable(
    redis_url: str,
) -> None:
    """redis-py's Cluster client closes the connections of commands in flight when it reloads the
    cluster's map (on CLUSTERDOWN in a failover): such a command is storage_unavailable (a 503 the
    client may retry), never the client's own AttributeError or RuntimeError (a 500)."""
    storage = Storage(connect(parse_redis_url(redis_url), timeout_seconds=1.0), operation_timeout_seconds=4.0)
    outcomes: Counter[str] = Counter()

    async def writes(worker: int) -> None:
        for n in range(100):
            key = f"otp:{{s{(worker + n) % 16:02d}}}:closed-under-it"
            try:
                await storage.call(lambda key=key, n=n: storage.client.set(key, n), "set")  # type: ignore[misc]
                outcomes["written"] += 1
            except Exception as exc:
                outcomes[type(exc).__name__] += 1

    async def reloads() -> None:
        for _ in range(10):
            await asyncio.sleep(0.03)
            await storage.client.aclose()  # what redis-py does itself on CLUSTERDOWN

    try:
        await asyncio.gather(*(writes(worker) for worker in range(16)), reloads())
    finally:
        await storage.close()
    assert set(outcomes) <= {"written", "StorageUnavailable"}, outcomes
    assert outcomes["written"] >= 1500, outcomes


async def test_a_bug_in_a_storage_call_is_raised_as_it_is_not_taken_for_storage_unavailable(
    redis_url: str,
) -> None:
    """An AttributeError of our own making inside redis-py (a list where it wants a mapping) is raised
    once, as the bug it is, not retried nor answered as storage_unavailable."""
    storage = Storage(connect(parse_redis_url(redis_url), timeout_seconds=1.0), operation_timeout_seconds=2.0)
    tries = 0

    async def buggy() -> object:
        nonlocal tries
        tries += 1
        return await storage.client.zadd("otp:{s01}:bug", [("vf_1|1", 1)])  # type: ignore[arg-type]

    try:
        with pytest.raises(AttributeError):
            await storage.call(buggy, "bug")
    finally:
        await storage.close()
    assert tries == 1
