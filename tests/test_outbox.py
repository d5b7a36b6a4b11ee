"""The event outbox on a real server: leases, their names, and order per verification."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from redis.asyncio import Redis

from otpservice.adapters.storage import keys
from otpservice.adapters.storage.outbox import EventOutbox
from otpservice.adapters.storage.scripts import Storage
from otpservice.adapters.storage.store import VerificationStore
from otpservice.service.verifications import new_verification_id
from tests.test_store import HASHER, NOW, new


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _hooked_verification(store: VerificationStore) -> str:
    """A verification of a tenant with a webhook, canceled: two events (created, canceled)."""
    vid = new_verification_id()
    await store.create(replace(new(vid), webhook=True), HASHER.hash(vid, "123456"), NOW)
    await store.cancel(vid, "c", NOW)
    return vid


async def test_only_the_lease_holder_settles_and_order_holds(redis: Redis) -> None:
    """A worker whose lease ended cannot settle the event under the next holder; the next event of the
    verification is only leased once the first is settled."""
    storage = Storage(redis, operation_timeout_seconds=5)
    store, outbox = VerificationStore(storage, 86400), EventOutbox(storage)
    vid = await _hooked_verification(store)
    shard = keys.shard_of(vid)
    later = NOW + timedelta(days=365)  # past every other test's events in this shard

    async def mine(at: datetime, lease_until: datetime) -> list[str]:
        return [e.type for e in await outbox.claim(shard, at, 1000, lease_until) if e.verification.id == vid]

    first = [
        e
        for e in await outbox.claim(shard, later, 1000, later + timedelta(seconds=1))
        if e.verification.id == vid
    ]
    assert [e.type for e in first] == ["verification.created"]  # its successor waits for it
    after_lease = later + timedelta(seconds=2)
    again = [
        e
        for e in await outbox.claim(shard, after_lease, 1000, after_lease + timedelta(seconds=30))
        if e.verification.id == vid
    ]
    assert [e.type for e in again] == ["verification.created"]  # taken over once the lease ended
    await outbox.settle(first[0], after_lease, "delivered")  # the old holder: ignored
    assert await mine(after_lease, after_lease + timedelta(seconds=30)) == []
    await outbox.settle(again[0], after_lease, "delivered")
    assert await mine(after_lease, after_lease + timedelta(seconds=30)) == ["verification.canceled"]
