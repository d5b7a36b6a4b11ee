"""Redis Cluster with a replica per primary: a primary killed, or handed over while it stays up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from otpservice.adapters.storage.clock import CLOCK_KEY
from otpservice.adapters.storage.connection import connect
from otpservice.adapters.storage.keys import call_schedule_key, shard_of_number, verification_key
from otpservice.adapters.storage.scripts import Storage
from otpservice.redis_url import parse_redis_url
from tests.support.flows import create, heard_code
from tests.support.redis_servers import ClusterSetup, ServerProcess, cluster_setup, wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import running_service


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    """Three primaries, a replica of each, shared by this module's tests: each leaves it whole."""
    with cluster_setup(replicas=True) as setup:
        yield setup


def _phones_served_by(cluster: ClusterSetup, node: ServerProcess, count: int, taken: str = "") -> list[str]:
    """``count`` national numbers other than ``taken`` whose shard's slot ``node`` serves now."""
    found: list[str] = []
    for n in range(10_000):
        phone = f"0912{n:06d}"
        if (
            phone != taken
            and cluster.primary_of(call_schedule_key(shard_of_number("+84" + phone[1:]))) is node
        ):
            found.append(phone)
            if len(found) == count:
                return found
    raise LookupError(f"not {count} numbers in the range with a shard on {node.port}")


def _written_through(primary: ServerProcess) -> None:
    with primary.client() as client:
        assert client.execute_command("WAIT", 1, 2000) == 1  # the replica has every write so far


@pytest.mark.long
def test_a_killed_primary_s_shard_serves_again_from_its_replica_within_15_seconds(
    cluster: ClusterSetup, sandbox: SandboxHandle
) -> None:
    """With the primary of a verification's shard killed, that verification answers 503 problem+json
    until the replica is promoted; within 15 s it is read and approved there, a new start on the shard
    lands, and the old primary restarted comes back as the new one's replica."""
    phone = "0912345200"
    with (
        running_service(cluster.url, sandbox.url, redis_timeout_seconds=0.25) as service,
        service.client() as client,
    ):
        created = create(client, phone)
        key = verification_key(created["id"])
        primary = cluster.primary_of(key)
        replica = cluster.replica_of(primary)
        assert replica is not None
        _written_through(primary)
        primary.kill()
        killed = time.monotonic()
        while (read := client.get(f"/otp/{created['id']}")).status_code != 200:
            assert read.status_code == 503, read.text
            assert read.headers["content-type"] == "application/problem+json"
            assert time.monotonic() - killed < 15, "the shard not served 15 s after its primary was killed"
            time.sleep(0.1)
        recovered = time.monotonic() - killed
        assert cluster.primary_of(key) is replica
        assert read.json()["status"] == "pending"
        verified = client.post("/verify", json={"id": created["id"], "code": heard_code(sandbox, phone)})
        assert verified.json()["valid"] is True, verified.text
        [other] = _phones_served_by(cluster, replica, 1, taken=phone)
        later = create(client, other)
        assert client.post("/verify", json={"id": later["id"], "code": heard_code(sandbox, other)}).json()[
            "valid"
        ]
        primary.start()
        wait_until(
            lambda: cluster.replica_of(replica) is primary, 20, "the old primary rejoining as a replica"
        )
        assert cluster.primary_of(key) is replica
    print(f"cluster failover: the shard served again {recovered:.1f} s after its primary was killed")


@pytest.mark.long
def test_a_handover_that_leaves_the_old_primary_up_loses_no_acknowledged_start(
    cluster: ClusterSetup, sandbox: SandboxHandle
) -> None:
    """A coordinated CLUSTER FAILOVER while starts keep arriving on one primary's shards: every start
    answered 201, before, during or after the handover, is then read from the new primary; and the
    storage clock, whose slot moved with them, is read from the new primary too, though nothing else
    corrected the client's map of that slot."""
    with (
        running_service(cluster.url, sandbox.url, redis_timeout_seconds=0.25) as service,
    ):
        primary = cluster.primary_of(CLOCK_KEY)
        replica = cluster.replica_of(primary)
        assert replica is not None
        clock_loop = asyncio.new_event_loop()  # a storage of its own, idle between its two readings
        storage = Storage(
            connect(parse_redis_url(cluster.url), timeout_seconds=1.0), operation_timeout_seconds=4
        )
        clock_loop.run_until_complete(storage.server_time(CLOCK_KEY))  # its map of the slots, as of now
        phones = _phones_served_by(cluster, primary, 400)
        acknowledged: list[str] = []
        other_answers: list[int] = []
        stop = threading.Event()

        def start_calls() -> None:
            with service.client() as client:
                for phone in phones:
                    if stop.is_set():
                        return
                    answer = client.post("/otp", json={"phone": phone})
                    if answer.status_code == 201:
                        acknowledged.append(answer.json()["id"])
                    else:
                        other_answers.append(answer.status_code)

        writer = threading.Thread(target=start_calls)
        writer.start()
        try:
            wait_until(lambda: len(acknowledged) >= 5, 10, "starts before the handover")
            with replica.client() as client:
                client.execute_command("CLUSTER", "FAILOVER")
            wait_until(
                lambda: cluster.replica_of(replica) is primary, 15, "the replica taking the slots over"
            )
            handed_over = len(acknowledged)
            wait_until(lambda: len(acknowledged) >= handed_over + 5, 10, "starts after the handover")
        finally:
            stop.set()
            writer.join(timeout=30)
        try:
            before = _evals_served(replica)
            clock_loop.run_until_complete(storage.server_time(CLOCK_KEY))
            assert _evals_served(replica) == before + 1, "the clock was read from the demoted node"
        finally:
            clock_loop.run_until_complete(storage.close())
            clock_loop.close()
        with service.client() as client:
            lost = [vid for vid in acknowledged if client.get(f"/otp/{vid}").status_code != 200]
        assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged starts lost: {lost[:5]}"
        assert set(other_answers) <= {503}, other_answers
    print(f"cluster handover: {len(acknowledged)} starts acknowledged, none lost, {len(other_answers)} 503")


def _evals_served(node: ServerProcess) -> int:
    with node.client() as client:
        stats = client.info("commandstats").get("cmdstat_eval", {})
    return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0
