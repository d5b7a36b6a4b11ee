"""Idempotency-Key records on a real server: claims and settlements that arrive twice or late."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from otpservice.adapters.storage.idempotency import IdempotencyRecords
from otpservice.adapters.storage.scripts import Storage

LEASE_MS = 60_000


@pytest.fixture
async def records(redis_url: str) -> AsyncIterator[tuple[IdempotencyRecords, Redis]]:
    client = Redis.from_url(redis_url)
    yield IdempotencyRecords(Storage(client, operation_timeout_seconds=5)), client
    await client.aclose()


async def test_a_claim_sent_again_by_its_own_request_is_still_its_claim(
    records: tuple[IdempotencyRecords, Redis],
) -> None:
    """A claim the client sends again (its reply was late) finds the request's own claim and holds the
    key, where another request's claim is told the key is running."""
    store, _ = records
    assert await store.claim("t", "k-own", "fp", "owner-1", LEASE_MS) is None
    assert await store.claim("t", "k-own", "fp", "owner-1", LEASE_MS) is None
    held = await store.claim("t", "k-own", "fp", "owner-2", LEASE_MS)
    assert held is not None
    assert held.state == "running"


async def test_an_answer_settled_after_its_claim_ran_out_is_kept_for_repeats(
    records: tuple[IdempotencyRecords, Redis],
) -> None:
    """An answer written after the claim's lease ran out (a long storage outage), with no other
    request holding the key, is kept: a repeat replays it instead of running again."""
    store, client = records
    assert await store.claim("t", "k-late", "fp", "owner-1", LEASE_MS) is None
    await client.delete(*[key async for key in client.scan_iter(match="otp:{i:t:*")])  # the lease ran out
    await store.keep("t", "k-late", "owner-1", "fp", 503, b'{"call_placed": true}')
    held = await store.claim("t", "k-late", "fp", "owner-2", LEASE_MS)
    assert held is not None
    assert (held.state, held.fingerprint, held.status, held.body) == (
        "done",
        "fp",
        503,
        b'{"call_placed": true}',
    )


async def test_an_answer_settled_after_another_request_took_the_key_is_not_kept(
    records: tuple[IdempotencyRecords, Redis],
) -> None:
    """Once another request holds the key, a late settlement of the first changes nothing."""
    store, client = records
    assert await store.claim("t", "k-taken", "fp", "owner-1", LEASE_MS) is None
    await client.delete(*[key async for key in client.scan_iter(match="otp:{i:t:*")])
    assert await store.claim("t", "k-taken", "fp", "owner-2", LEASE_MS) is None
    await store.keep("t", "k-taken", "owner-1", "fp", 503, b"{}")
    held = await store.claim("t", "k-taken", "fp", "owner-3", LEASE_MS)
    assert held is not None
    assert held.state == "running"
