"""A shard's slot moving between Cluster primaries under traffic (what ``valkey-cli --cluster reshard``
does: CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE key by key, SETSLOT NODE).

The scripts build most of a shard's keys themselves, and the server checks only declared keys before
running a script: these tests prove that a script meeting a key that has moved stops before writing
anything and is answered as storage being unavailable, and that a budget declared to the script
cannot be read as empty on the node the slot moves to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from redis import Redis

from otpservice.adapters.storage import keys
from otpservice.adapters.storage.connection import connect
from otpservice.adapters.storage.scripts import Storage
from otpservice.adapters.storage.store import NumberPolicy, VerificationStore
from otpservice.domain import errors
from otpservice.domain.limits import Limit
from otpservice.redis_url import parse_redis_url
from otpservice.service.verifications import new_verification_id
from tests.support.redis_servers import ClusterSetup, cluster_setup
from tests.test_store import HASHER, NOW, new, placed


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    """A Cluster of this module's own: its slots are moved."""
    with cluster_setup() as handle:
        yield handle


@pytest.fixture
async def store(cluster: ClusterSetup) -> AsyncIterator[VerificationStore]:
    storage = Storage(connect(parse_redis_url(cluster.url), timeout_seconds=2), operation_timeout_seconds=10)
    yield VerificationStore(storage, 86400, NumberPolicy(call_limits=(Limit(2, 3_600_000),)))
    await storage.close()


def _command(client: Redis, *args: object) -> Any:
    """One command to one node (redis-py leaves execute_command untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


@dataclass
class SlotMove:
    """One slot moving from the node holding it to another, step by step."""

    slot: int
    source: Redis
    target: Redis
    target_port: int
    everyone: list[Redis]

    @classmethod
    def begin(cls, cluster: ClusterSetup, verification_id: str) -> SlotMove:
        tag = f"otp:{{s{keys.shard_of(verification_id):02d}}}"
        ports = [node.port for node in cluster.nodes]
        clients = [Redis(port=port) for port in ports]
        slot = int(_command(clients[0], "CLUSTER", "KEYSLOT", tag))
        holder = next(i for i, client in enumerate(clients) if slot in _slots(client))
        other = (holder + 1) % len(clients)
        source, target = clients[holder], clients[other]
        _command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", _command(source, "CLUSTER", "MYID"))
        _command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", _command(target, "CLUSTER", "MYID"))
        return cls(slot, source, target, ports[other], clients)

    def move(self, *names: str) -> None:
        for name in names:
            _command(self.source, "MIGRATE", "127.0.0.1", self.target_port, name, 0, 5000)

    def finish(self) -> None:
        """Move what is left, then give the slot to the target on every node."""
        left = _command(self.source, "CLUSTER", "GETKEYSINSLOT", self.slot, 1000)
        self.move(*[name.decode() for name in left])
        target_id = _command(self.target, "CLUSTER", "MYID")
        for client in self.everyone:
            _command(client, "CLUSTER", "SETSLOT", self.slot, "NODE", target_id)


def _slots(client: Redis) -> set[int]:
    """The slots this node serves."""
    myself = _command(client, "CLUSTER", "MYID")
    owned: set[int] = set()
    for first, last, *holders in _command(client, "CLUSTER", "SLOTS"):
        if holders[0][2] == myself:
            owned.update(range(first, last + 1))
    return owned


async def test_a_script_meeting_a_moved_key_writes_nothing_and_is_unavailable(
    cluster: ClusterSetup, store: VerificationStore
) -> None:
    """A cancel whose shard's outbox has already moved (the record not yet) changes nothing and is
    storage_unavailable; once the slot has moved the cancel goes through, with its event."""
    vid = new_verification_id()
    await store.create(replace(new(vid), webhook=True), HASHER.hash(vid, "111111"), NOW)
    await placed(store, vid, 1, "c1")
    record = keys.verification_key(vid)
    move = SlotMove.begin(cluster, vid)
    before = move.source.hgetall(record)
    deliveries, outbox, *_ = keys.outbox_keys(keys.shard_of(vid))
    move.move(deliveries, outbox)
    with pytest.raises(errors.StorageUnavailable):
        await store.cancel(vid, "c", NOW)
    assert move.source.hgetall(record) == before
    move.finish()
    assert (await store.cancel(vid, "c", NOW)).status.value == "canceled"
    events = [str(value) for value in move.target.hvals(outbox)]
    assert any("verification.canceled" in event for event in events)


async def test_a_resend_cannot_read_the_numbers_budget_as_empty_on_the_node_it_moves_to(
    cluster: ClusterSetup, store: VerificationStore
) -> None:
    """With the record moved and the number's calls log not yet, a resend past the number's budget
    is unavailable, not allowed; once the slot has moved the budget refuses it."""
    vid = new_verification_id()
    await store.create(new(vid), HASHER.hash(vid, "111111"), NOW)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=40)

    async def resend(token: str, seconds_later: int = 0) -> object:
        return await store.begin_send(
            vid,
            at + timedelta(seconds=seconds_later),
            token=token,
            cooldown_seconds=1,
            max_sends=9,
            ttl_seconds=300,
            placement_deadline=at + timedelta(seconds=20),
            code_hash=HASHER.hash(vid, "222222"),
            phone=new(vid).phone,
        )

    assert await resend("r2") == 2
    await placed(store, vid, 2, "c2")
    move = SlotMove.begin(cluster, vid)
    move.move(keys.verification_key(vid), keys.schedule_key_for(vid))
    with pytest.raises(errors.StorageUnavailable):
        await resend("r3", 5)
    move.finish()
    with pytest.raises(errors.PhoneRateLimited):
        await resend("r3", 5)
