"""The Redis store's atomic moves, on a real server: races the HTTP tests cannot time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from otpservice.adapters.redis_store import (
    OPEN_CALLS_KEY,
    NewVerification,
    VerificationStore,
    open_call,
    pack_hash,
    unpack_hash,
)
from otpservice.domain.codes import CodeHasher
from otpservice.domain.verification import DeliveryStatus, VerificationStatus
from otpservice.service.verifications import new_verification_id
from otpservice.settings import Argon2Settings

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[VerificationStore]:
    redis = Redis.from_url(redis_url)
    yield VerificationStore(redis, retention_seconds=86400)
    await redis.aclose()


async def new_pending(store: VerificationStore) -> str:
    vid = new_verification_id()
    await store.create(
        NewVerification(
            id=vid,
            phone="+84987654321",
            code_length=6,
            ttl_seconds=300,
            created_at=NOW,
            expires_at=NOW + timedelta(seconds=300),
            resend_available_at=NOW + timedelta(seconds=30),
            max_attempts=5,
            metadata={},
        )
    )
    return vid


async def commit(store: VerificationStore, vid: str, seq: int, call_id: str) -> str:
    answer = await store.commit_send(
        vid,
        NOW,
        seq,
        "$argon2id$fake",
        call_id,
        expires_at=NOW + timedelta(seconds=300),
        check_outcome_at=NOW,
    )
    return answer.verdict


async def test_callback_before_commit_is_kept(store: VerificationStore, redis_url: str) -> None:
    """A callback that overtakes our own record of the placement is recorded, and the commit keeps it."""
    vid = await new_pending(store)
    early = await store.record_delivery(vid, NOW, 1, "c1_0987654321", DeliveryStatus.BUSY, "BUSY", 0)
    assert early.verdict == "recorded"
    assert await commit(store, vid, 1, "c1_0987654321") == "committed"
    verification = await store.get(vid)
    assert verification is not None
    assert verification.delivery.status is DeliveryStatus.BUSY
    assert verification.delivery.call_id == "c1_0987654321"
    redis = Redis.from_url(redis_url)
    try:
        assert await redis.zscore(OPEN_CALLS_KEY, open_call(vid, 1)) is None
    finally:
        await redis.aclose()


async def test_callback_cannot_replace_the_placed_call_id(store: VerificationStore) -> None:
    """The call id the provider gave at placement wins over the one a callback body carries."""
    vid = await new_pending(store)
    await commit(store, vid, 1, "c1_0987654321")
    await store.record_delivery(vid, NOW, 1, "forged-id", DeliveryStatus.ANSWERED, "ANSWERED", 3)
    verification = await store.get(vid)
    assert verification is not None
    assert verification.delivery.call_id == "c1_0987654321"


async def test_callback_for_an_unknown_send_is_stale(store: VerificationStore) -> None:
    """A callback naming a send that was never begun changes nothing."""
    vid = await new_pending(store)
    await commit(store, vid, 1, "c1")
    answer = await store.record_delivery(vid, NOW, 7, "c7", DeliveryStatus.ANSWERED, "ANSWERED", 3)
    assert answer.verdict == "stale"


async def test_rejected_resend_describes_the_rejected_attempt(store: VerificationStore) -> None:
    """A resend the provider refuses leaves a delivery about that attempt, not a mix with the last call."""
    vid = await new_pending(store)
    await commit(store, vid, 1, "c1")
    await store.record_delivery(vid, NOW, 1, "c1", DeliveryStatus.ANSWERED, "ANSWERED", 9)
    begun = await store.begin_send(vid, NOW + timedelta(seconds=30), 30, 5)
    seq = int(begun.details[0])
    await store.fail_send(
        vid, NOW, fail_verification=False, delivery=DeliveryStatus.REJECTED, reason="Blacklist", send_seq=seq
    )
    verification = await store.get(vid)
    assert verification is not None
    assert verification.status is VerificationStatus.PENDING
    delivery = verification.delivery
    assert (delivery.status, delivery.reason, delivery.call_id, delivery.provider_status) == (
        DeliveryStatus.REJECTED,
        "Blacklist",
        None,
        None,
    )
    assert delivery.send_seq == seq


async def test_abort_gives_back_cooldown_and_call(store: VerificationStore) -> None:
    """Aborting a resend that surely never left restores the cooldown and the call budget."""
    vid = await new_pending(store)
    await commit(store, vid, 1, "c1")
    later = NOW + timedelta(seconds=30)
    begun = await store.begin_send(vid, later, 30, 2)
    await store.abort_send(vid, later + timedelta(seconds=30), begun.details[1], int(begun.details[0]))
    again = await store.begin_send(vid, later, 30, 2)
    assert again.verdict == "begun"
    assert again.details[0] == begun.details[0]


async def test_right_code_checked_after_expiry_is_refused(store: VerificationStore) -> None:
    """An attempt reserved before expiry but judged after it is not approved."""
    vid = await new_pending(store)
    await commit(store, vid, 1, "c1")
    reserved = await store.reserve_attempt(vid, NOW + timedelta(seconds=299), 6)
    assert reserved.verdict == "reserved"
    result = await store.record_result(vid, NOW + timedelta(seconds=301), reserved.details[2], True)
    assert (result.verdict, result.details) == ("not_pending", ("expired",))


async def test_every_key_has_a_ttl(store: VerificationStore, redis_url: str) -> None:
    """Verification records, the open-calls set and the number budget all expire."""
    vid = await new_pending(store)
    await commit(store, vid, 1, "c1")
    await store.take_phone_call("+84987654321", NOW, 10, 3600)
    redis = Redis.from_url(redis_url)
    try:
        async for key in redis.scan_iter("otp:*"):
            assert await redis.pttl(key) > 0, key
    finally:
        await redis.aclose()


def test_packed_hash_round_trips() -> None:
    """An argon2 hash survives packing into Redis's compact form, and still checks the code."""
    hasher = CodeHasher(b"p" * 40, Argon2Settings())
    encoded = hasher.hash("vf_1", "123456")
    params, packed = pack_hash(encoded)
    assert len(packed) <= 64
    assert unpack_hash(params, packed) == encoded
    assert hasher.matches("vf_1", "123456", unpack_hash(params, packed))


async def test_pending_verification_stays_compact(store: VerificationStore, redis_url: str) -> None:
    """A pending verification is stored as a listpack (every value at most 64 bytes)."""
    vid = await new_pending(store)
    hasher = CodeHasher(b"p" * 40, Argon2Settings())
    await store.commit_send(
        vid,
        NOW,
        1,
        hasher.hash(vid, "123456"),
        "1_1_1_5_418b619d-8ff0-4c4c-b25c-b10a7c93ab84_0987654321",
        expires_at=NOW + timedelta(seconds=300),
        check_outcome_at=NOW,
    )
    redis = Redis.from_url(redis_url)
    try:
        assert await redis.object("encoding", store.key(vid)) == b"listpack"
    finally:
        await redis.aclose()
