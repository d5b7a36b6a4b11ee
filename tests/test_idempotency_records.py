"""Idempotency-Key records on a real server: claims and settlements that arrive twice or late."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from otpservice.adapters.storage.idempotency import IdempotencyRecords
from otpservice.adapters.storage.scripts import Storage
from otpservice.domain import errors

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


async def test_a_key_held_by_a_running_request_says_for_how_long_at_most(
    records: tuple[IdempotencyRecords, Redis],
) -> None:
    """Another request's claim is told how long the running one holds the key at most (its lease,
    which outlasts any request), what a client waits out should that request's worker have died."""
    store, _ = records
    assert await store.claim("t", "k-held", "fp", "owner-1", LEASE_MS) is None
    held = await store.claim("t", "k-held", "fp", "owner-2", LEASE_MS)
    assert held is not None
    assert LEASE_MS - 5_000 < held.held_ms <= LEASE_MS


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


async def test_a_claim_landing_after_its_request_gave_it_up_takes_nothing(
    records: tuple[IdempotencyRecords, Redis],
) -> None:
    """A claim that lands after its own request let the key go (storage stalled) does not hold the
    key, and another request claims it at once."""
    store, _ = records
    await store.release("t-gave-up", "k", "owner-1", LEASE_MS)
    with pytest.raises(errors.StorageUnavailable):
        await store.claim("t-gave-up", "k", "fp", "owner-1", LEASE_MS)
    assert await store.claim("t-gave-up", "k", "fp", "owner-2", LEASE_MS) is None
    await store.keep("t-gave-up", "k", "owner-2", "fp", 201, b"{}")
    held = await store.claim("t-gave-up", "k", "fp", "owner-3", LEASE_MS)
    assert held is not None
    assert (held.state, held.status) == ("done", 201)


async def test_a_claim_that_landed_is_let_go_by_its_release(
    records: tuple[IdempotencyRecords, Redis],
) -> None:
    """When the claim landed before the release, the release frees the key as a normal one does."""
    store, _ = records
    assert await store.claim("t-landed", "k", "fp", "owner-1", LEASE_MS) is None
    await store.release("t-landed", "k", "owner-1", LEASE_MS)
    assert await store.claim("t-landed", "k", "fp", "owner-2", LEASE_MS) is None


async def test_a_give_up_landing_twice_keeps_its_mark(records: tuple[IdempotencyRecords, Redis]) -> None:
    """A give-up retried after a late reply leaves its mark: the late claim still takes nothing."""
    store, _ = records
    await store.release("t-twice", "k", "owner-1", LEASE_MS)
    await store.release("t-twice", "k", "owner-1", LEASE_MS)
    with pytest.raises(errors.StorageUnavailable):
        await store.claim("t-twice", "k", "fp", "owner-1", LEASE_MS)
    assert await store.claim("t-twice", "k", "fp", "owner-2", LEASE_MS) is None


async def test_another_requests_give_up_mark_does_not_stop_an_answer_being_kept(
    records: tuple[IdempotencyRecords, Redis],
) -> None:
    """An answer written after its claim ran out is kept even over another request's give-up mark."""
    store, client = records
    assert await store.claim("t-over", "k", "fp", "owner-1", LEASE_MS) is None
    await client.delete(*[key async for key in client.scan_iter(match="otp:{i:t-over:*")])  # lease ran out
    await store.release("t-over", "k", "owner-2", LEASE_MS)  # a repeat whose claim stalled gave up
    await store.keep("t-over", "k", "owner-1", "fp", 201, b'{"call_placed": true}')
    held = await store.claim("t-over", "k", "fp", "owner-3", LEASE_MS)
    assert held is not None
    assert (held.state, held.status) == ("done", 201)
