"""The Redis store's atomic moves, on a real server: races, retries and orders the HTTP tests cannot time."""

from __future__ import annotations

import itertools
import secrets
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from otpservice.adapters.storage import keys
from otpservice.adapters.storage.budget import Budget, BudgetKind, CallBudgets, Charges, Refusal
from otpservice.adapters.storage.records import pack_hash, text, to_verification, unpack_hash
from otpservice.adapters.storage.scripts import Storage
from otpservice.adapters.storage.store import (
    NewVerification,
    NumberPolicy,
    SendCode,
    Started,
    VerificationStore,
)
from otpservice.domain import errors
from otpservice.domain.codes import CodeHasher
from otpservice.domain.limits import Limit
from otpservice.domain.verification import DeliveryStatus, VerificationStatus
from otpservice.service.verifications import new_verification_id
from otpservice.settings import Argon2Settings

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LEASE = NOW + timedelta(seconds=15)
MS = int(NOW.timestamp() * 1000)
HASHER = CodeHasher(b"p" * 40, Argon2Settings(time_cost=1, memory_cost_kib=8))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> VerificationStore:
    return VerificationStore(Storage(redis, operation_timeout_seconds=5), retention_seconds=86400)


def phone_for(vid: str) -> str:
    """A number of the verification's own, in its shard (as the service draws ids for numbers)."""
    for n in itertools.count(zlib.crc32(vid.encode())):
        phone = f"+8498{n % 10_000_000:07d}"
        if keys.shard_of_number(phone) == keys.shard_of(vid):
            return phone
    raise AssertionError("unreachable")


def new(vid: str) -> NewVerification:
    return NewVerification(
        id=vid,
        tenant="default",
        call=f"{vid}:1:t",
        phone=phone_for(vid),
        code_length=6,
        ttl_seconds=300,
        created_at=NOW,
        expires_at=NOW + timedelta(seconds=300),
        resend_available_at=NOW + timedelta(seconds=30),
        max_attempts=5,
        metadata={},
    )


async def new_pending(store: VerificationStore, code: str = "123456") -> str:
    vid = new_verification_id()
    await store.create(new(vid), HASHER.hash(vid, code), NOW + timedelta(seconds=20))
    return vid


async def placed(store: VerificationStore, vid: str, seq: int, call_id: str) -> str:
    result = await store.placed(vid, NOW, seq, call_id, ttl_seconds=300, check_outcome_at=NOW)
    return result.outcome


async def scheduled(redis: Redis, vid: str, seq: int) -> float | None:
    score: float | None = await redis.zscore(keys.schedule_key_for(vid), keys.scheduled_call(vid, seq))
    return score


async def never_left(store: VerificationStore, vid: str, at: datetime, seq: int, token: str) -> None:
    """Record that the resend ``seq`` begun by ``token`` surely never left (the provider was down)."""
    await store.unplaced(
        vid,
        at,
        seq,
        f"{vid}:{token}",
        delivery=DeliveryStatus.FAILED,
        reason="down",
        give_back_cooldown=True,
        describe=False,
    )


async def test_callback_before_placement_is_kept(store: VerificationStore, redis: Redis) -> None:
    """A callback that overtakes our record of the placement is recorded, and the placement keeps it."""
    vid = await new_pending(store)
    early = await store.record_delivery(vid, NOW, 1, "c1_0987654321", DeliveryStatus.BUSY, "BUSY", 0)
    assert early.outcome == "recorded"
    assert early.verification.sends == 1  # the callback proves the call was placed
    assert await placed(store, vid, 1, "c1_0987654321") == "placed"
    verification = await store.get(vid)
    assert verification is not None
    assert (verification.delivery.status, verification.delivery.call_id) == (
        DeliveryStatus.BUSY,
        "c1_0987654321",
    )
    assert verification.sends == 1
    assert await scheduled(redis, vid, 1) is None


async def test_a_recorded_call_outcome_moves_the_verifications_updated_at(store: VerificationStore) -> None:
    """A callback that records the call's outcome updates the verification's updated_at too."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    later = NOW + timedelta(seconds=42)
    await store.record_delivery(vid, later, 1, "c1", DeliveryStatus.ANSWERED, "ANSWERED", 9)
    verification = await store.get(vid)
    assert verification is not None
    assert verification.updated_at == verification.delivery.updated_at == later


async def test_callback_naming_another_call_changes_nothing(store: VerificationStore) -> None:
    """A callback whose body names another call than the one placed for that send is foreign."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1_0987654321")
    update = await store.record_delivery(vid, NOW, 1, "forged-id", DeliveryStatus.ANSWERED, "ANSWERED", 3)
    assert update.outcome == "foreign"
    assert update.verification.delivery.status is DeliveryStatus.CALLING
    assert update.verification.delivery.call_id == "c1_0987654321"


async def test_early_callback_about_another_call_is_dropped_by_the_placement(
    store: VerificationStore,
) -> None:
    """If an early callback named another call id, the placement's own id wins and the status resets."""
    vid = await new_pending(store)
    await store.record_delivery(vid, NOW, 1, "other-call", DeliveryStatus.BUSY, "BUSY", 0)
    await placed(store, vid, 1, "c1_0987654321")
    verification = await store.get(vid)
    assert verification is not None
    assert (verification.delivery.status, verification.delivery.call_id) == (
        DeliveryStatus.CALLING,
        "c1_0987654321",
    )


async def test_callback_for_an_unknown_send_is_stale(store: VerificationStore) -> None:
    """A callback naming a send that was never begun changes nothing."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    update = await store.record_delivery(vid, NOW, 7, "c7", DeliveryStatus.ANSWERED, "ANSWERED", 3)
    assert update.outcome == "stale"


async def begin(store: VerificationStore, vid: str, code: str, at: datetime, token: str = "") -> int:
    """Begin a resend of ``vid`` at ``at`` with a new code (under ``token``, else a fresh one)."""
    begun = await store.begin_send(
        vid,
        at,
        token=token or secrets.token_hex(4),
        cooldown_seconds=30,
        max_sends=5,
        code_hash=HASHER.hash(vid, code),
        ttl_seconds=300,
        placement_deadline=at + timedelta(seconds=20),
    )
    assert isinstance(begun, int)
    return begun


async def test_rejected_resend_describes_the_rejected_attempt(store: VerificationStore) -> None:
    """A resend the provider refuses leaves a delivery about that attempt, and the old code current."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    await store.record_delivery(vid, NOW, 1, "c1", DeliveryStatus.ANSWERED, "ANSWERED", 9)
    seq = await begin(store, vid, "222222", NOW + timedelta(seconds=30), token="t")
    await store.unplaced(
        vid,
        NOW,
        seq,
        f"{vid}:t",
        delivery=DeliveryStatus.REJECTED,
        reason="Blacklist",
        give_back_cooldown=False,
        describe=True,
    )
    verification = await store.get(vid)
    assert verification is not None
    assert verification.status is VerificationStatus.PENDING
    delivery = verification.delivery
    assert (
        delivery.status,
        delivery.reason,
        delivery.call_id,
        delivery.provider_status,
        delivery.send_seq,
    ) == (
        DeliveryStatus.REJECTED,
        "Blacklist",
        None,
        None,
        seq,
    )
    reservation = await store.reserve(vid, "t1", NOW, 6, LEASE)
    assert [code.send_seq for code in reservation.codes] == [1]


async def test_unplaced_resend_gives_back_cooldown_send_and_expiry(store: VerificationStore) -> None:
    """A resend that surely never left restores the cooldown, the send number and the old expiry."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    before = await store.get(vid)
    later = NOW + timedelta(seconds=30)
    seq = await begin(store, vid, "222222", later, token="t")
    await never_left(store, vid, later, seq, "t")
    after = await store.get(vid)
    assert before is not None
    assert after is not None
    assert (after.resend_available_at, after.expires_at, after.delivery) == (
        before.resend_available_at,
        before.expires_at,
        before.delivery,
    )
    assert await begin(store, vid, "333333", later) == seq


async def test_an_undone_resend_puts_the_expiry_back_on_a_schedule_that_expires(
    store: VerificationStore, redis: Redis
) -> None:
    """The expiry schedule an undone resend writes to lives no longer than needed (it has a TTL)."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    later = NOW + timedelta(seconds=30)
    seq = await begin(store, vid, "222222", later, token="t")
    expiry = keys.expiry_schedule_key(keys.shard_of(vid))
    await redis.delete(expiry)  # the sweep took its last member meanwhile
    await never_left(store, vid, later, seq, "t")
    assert await redis.zscore(expiry, vid) is not None
    assert await redis.pttl(expiry) > 0


async def test_a_resend_waits_while_a_placement_is_in_flight(store: VerificationStore) -> None:
    """One call is placed at a time; once its outcome is unknown a resend may go, and both codes count."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    seq = await begin(store, vid, "222222", NOW + timedelta(seconds=30))
    with pytest.raises(errors.ResendTooSoon):
        await begin(store, vid, "333333", NOW + timedelta(seconds=90))
    await store.placement_unknown(vid, NOW + timedelta(seconds=31), seq, "timeout")
    third = await begin(store, vid, "333333", NOW + timedelta(seconds=90))
    reservation = await store.reserve(
        vid, "t1", NOW + timedelta(seconds=90), 6, LEASE + timedelta(seconds=90)
    )
    assert [code.send_seq for code in reservation.codes] == [seq, third]


async def test_right_code_judged_after_expiry_is_refused(store: VerificationStore) -> None:
    """An attempt reserved before expiry but judged after it is not approved."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    await store.reserve(vid, "t1", NOW + timedelta(seconds=299), 6, LEASE + timedelta(seconds=299))
    with pytest.raises(errors.NotPending) as refused:
        await store.judge(vid, "t1", NOW + timedelta(seconds=301), 1)
    assert refused.value.status is VerificationStatus.EXPIRED


async def test_a_code_replaced_by_a_placement_while_it_was_checked_still_approves(
    store: VerificationStore,
) -> None:
    """A code accepted when its attempt was reserved approves even if the new call's placement made
    it old before the judgement (the check began while it was good)."""
    vid = await new_pending(store, "111111")
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin(store, vid, "222222", at)
    reservation = await store.reserve(vid, "t1", at, 6, LEASE + timedelta(seconds=30))
    assert [c.send_seq for c in reservation.codes if HASHER.matches(vid, "111111", c.encoded_hash)] == [1]
    assert await placed(store, vid, seq, "c2") == "placed"
    judgement = await store.judge(vid, "t1", at, 1)
    assert (judgement.verdict, judgement.verification.attempts) == ("approved", 1)


async def test_retried_reserve_and_judge_count_once(store: VerificationStore) -> None:
    """The same request retried (its reply was lost) reserves and judges one attempt, with one verdict."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    first = await store.reserve(vid, "t1", NOW, 6, LEASE)
    assert await store.reserve(vid, "t1", NOW, 6, LEASE) == first
    wrong = await store.judge(vid, "t1", NOW, None)
    again = await store.judge(vid, "t1", NOW, None)
    assert (wrong.verdict, again.verdict) == ("wrong", "wrong")
    assert again.verification.attempts == 1


async def test_a_retried_approval_answers_approved_again(store: VerificationStore) -> None:
    """The request whose approval reply was lost gets "approved" again on retry; another gets 409."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    await store.reserve(vid, "t1", NOW, 6, LEASE)
    await store.judge(vid, "t1", NOW, 1)
    assert (await store.judge(vid, "t1", NOW, 1)).verdict == "approved"
    with pytest.raises(errors.NotPending):
        await store.reserve(vid, "t2", NOW, 6, LEASE)


async def test_reserved_attempts_block_further_ones_until_judged_or_leased_out(
    store: VerificationStore,
) -> None:
    """With every attempt in flight the next is refused until a lease ends; then it comes back."""
    vid = await new_pending(store)
    for n in range(5):
        await store.reserve(vid, f"t{n}", NOW, 6, LEASE)
    with pytest.raises(errors.AttemptsInFlight) as busy:
        await store.reserve(vid, "t5", NOW, 6, LEASE)
    assert busy.value.retry_after_seconds == 15
    later = LEASE + timedelta(seconds=1)
    await store.reserve(vid, "t6", later, 6, later + timedelta(seconds=15))
    with pytest.raises(errors.CheckNotRecorded):
        await store.judge(vid, "t0", later, None)  # its lease ended and another took its place
    verification = await store.get(vid)
    assert verification is not None
    assert verification.attempts == 0


async def test_a_released_token_voids_a_reservation_landing_later(store: VerificationStore) -> None:
    """Release before the reservation lands (a stalled server applying queued writes): it changes nothing."""
    vid = await new_pending(store)
    await store.release(vid, "late", NOW)
    with pytest.raises(errors.CheckNotRecorded):
        await store.reserve(vid, "late", NOW, 6, LEASE)
    await store.reserve(vid, "early", NOW, 6, LEASE)
    await store.release(vid, "early", NOW)
    with pytest.raises(errors.CheckNotRecorded):
        await store.judge(vid, "early", NOW, 1)
    for n in range(5):
        await store.reserve(vid, f"t{n}", NOW, 6, LEASE)  # both attempts came back


async def test_a_retried_cancel_answers_canceled(store: VerificationStore) -> None:
    """The cancel whose reply was lost is answered "canceled" on retry; another cancel gets 409."""
    vid = await new_pending(store)
    await store.cancel(vid, "c1", NOW)
    assert (await store.cancel(vid, "c1", NOW)).status is VerificationStatus.CANCELED
    with pytest.raises(errors.NotPending):
        await store.cancel(vid, "c2", NOW)


async def test_a_retried_create_creates_once(store: VerificationStore) -> None:
    """Creating again with the same id (a retry) answers the same pending verification."""
    vid = new_verification_id()
    first = await store.create(new(vid), HASHER.hash(vid, "123456"), NOW)
    again = await store.create(new(vid), HASHER.hash(vid, "654321"), NOW)
    assert first == again


async def test_void_wins_over_a_create_in_either_order(store: VerificationStore) -> None:
    """A create known not to have led to a call ends failed whether it lands before or after its void."""
    late = new_verification_id()
    await store.void_create(new(late), "not placed", NOW)
    with pytest.raises(errors.NotPending):
        await store.create(new(late), HASHER.hash(late, "123456"), NOW)
    early = await new_pending(store)
    await store.void_create(new(early), "not placed", NOW)
    for vid in (late, early):
        verification = await store.get(vid)
        assert verification is not None
        assert (verification.status, verification.delivery.status) == (
            VerificationStatus.FAILED,
            DeliveryStatus.FAILED,
        )
        with pytest.raises(errors.NotPending):
            await store.reserve(vid, "t", NOW, 6, LEASE)


async def test_a_void_after_the_reconciler_called_the_first_call_unknown_still_fails_it(
    store: VerificationStore,
) -> None:
    """A void landing after the placement was marked unknown fails the verification (no second pending)."""
    vid = await new_pending(store)
    await store.placement_unknown(vid, NOW + timedelta(seconds=21), 1, "deadline passed")
    await store.void_create(new(vid), "not placed", NOW + timedelta(seconds=22))
    verification = await store.get(vid)
    assert verification is not None
    assert (verification.status, verification.delivery.status) == (
        VerificationStatus.FAILED,
        DeliveryStatus.FAILED,
    )


async def test_a_void_landing_after_the_expiry_leaves_it_expired(store: VerificationStore) -> None:
    """A create voided after the verification's time ran out (a long storage outage) ends expired."""
    vid = await new_pending(store)
    await store.void_create(new(vid), "not placed", NOW + timedelta(seconds=301))
    verification = await store.get(vid)
    assert verification is not None
    assert (verification.status, verification.delivery.status) == (
        VerificationStatus.EXPIRED,
        DeliveryStatus.FAILED,
    )


async def test_a_first_call_that_never_left_after_the_expiry_leaves_it_expired(
    store: VerificationStore,
) -> None:
    """A first call known never to have left, recorded after the time ran out, leaves it expired."""
    vid = await new_pending(store)
    after_expiry = NOW + timedelta(seconds=301)
    verification = await store.unplaced(
        vid,
        after_expiry,
        1,
        new(vid).call,
        delivery=DeliveryStatus.REJECTED,
        reason="refused",
        give_back_cooldown=False,
        describe=True,
    )
    assert verification is not None
    assert (verification.status, verification.delivery.status) == (
        VerificationStatus.EXPIRED,
        DeliveryStatus.REJECTED,
    )


async def _a_send_given_way_to_as_unknown(store: VerificationStore) -> tuple[str, int, datetime]:
    """A verification whose resend (answered: its send number, and when it began) was called
    unknown, then given way to by the next resend."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    lost = await begin(store, vid, "222222", at, token="t1")
    await store.placement_unknown(vid, at + timedelta(seconds=25), lost, "placement unrecorded")
    await begin(store, vid, "333333", at + timedelta(seconds=31), token="t2")
    return vid, lost, at


async def test_a_send_given_way_to_as_unknown_counts_once_its_placement_is_recorded(
    store: VerificationStore,
) -> None:
    """A resend whose placement was called unknown, given way to by the next one, counts in sends
    once its placement is recorded after all."""
    vid, lost, _ = await _a_send_given_way_to_as_unknown(store)
    before = await store.get(vid)
    await placed(store, vid, lost, "c2")
    after = await store.get(vid)
    assert before is not None
    assert after is not None
    assert after.sends == before.sends + 1


async def test_a_send_given_way_to_as_unknown_counts_once_when_its_callback_comes_first(
    store: VerificationStore,
) -> None:
    """A resend given way to as unknown counts in sends once, when its callback proves it placed
    before its placement is recorded."""
    vid, lost, at = await _a_send_given_way_to_as_unknown(store)
    before = await store.get(vid)
    await store.record_delivery(vid, at, lost, "c2", DeliveryStatus.ANSWERED, "ANSWERED", 4)
    await placed(store, vid, lost, "c2")
    after = await store.get(vid)
    assert before is not None
    assert after is not None
    assert after.sends == before.sends + 1


async def test_a_call_placed_after_a_cancel_counts_as_a_send(store: VerificationStore) -> None:
    """A first call the provider took after the verification was canceled counts in its sends."""
    vid = await new_pending(store)
    await store.cancel(vid, "c", NOW)
    assert await placed(store, vid, 1, "c1") == "canceled"
    assert await placed(store, vid, 1, "c1") == "canceled"  # the write landing twice counts once
    verification = await store.get(vid)
    assert verification is not None
    assert (verification.sends, verification.delivery.status) == (1, DeliveryStatus.CALLING)


async def test_placement_reports_what_the_verification_became(store: VerificationStore) -> None:
    """A call placed after the verification was canceled is recorded, and its outcome says canceled."""
    vid = await new_pending(store)
    await store.cancel(vid, "c", NOW)
    result = await store.placed(vid, NOW, 1, "c1", ttl_seconds=300, check_outcome_at=NOW)
    assert result.outcome == "canceled"
    assert result.verification.delivery.call_id == "c1"


async def test_every_key_has_a_ttl(store: VerificationStore, redis: Redis) -> None:
    """Verification records, call schedules and the number budget all expire."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    budgets = CallBudgets(Storage(redis, operation_timeout_seconds=5))
    prefix = Budget("prefix", "r:+84987654", (Limit(10, 3_600_000),))
    await budgets.give_back(Charges("vf_0:1:t", MS, (prefix,)))
    await budgets.take("vf_1:1:t", [prefix], MS)
    async for key in redis.scan_iter("otp:*"):
        assert await redis.pttl(key) > 0, key


def test_packed_hash_round_trips() -> None:
    """An argon2 hash survives packing into Redis's compact form, and still checks the code."""
    encoded = HASHER.hash("vf_1", "123456")
    params, packed = pack_hash(encoded)
    assert len(packed) <= 64
    assert unpack_hash(params, packed) == encoded
    assert HASHER.matches("vf_1", "123456", unpack_hash(params, packed))


async def test_pending_verification_stays_compact(store: VerificationStore, redis: Redis) -> None:
    """A pending verification with a placed call is stored as a listpack (every value at most 64 bytes)."""
    hasher = CodeHasher(b"p" * 40, Argon2Settings())
    vid = new_verification_id()
    await store.create(new(vid), hasher.hash(vid, "123456"), NOW)
    await placed(store, vid, 1, "1_1_1_5_418b619d-8ff0-4c4c-b25c-b10a7c93ab84_0987654321")
    assert await redis.object("encoding", keys.verification_key(vid)) == b"listpack"


async def test_a_call_given_back_before_its_count_lands_is_not_counted(redis: Redis) -> None:
    """A budget count landing after its give-back (a stalled server) does not spend the budget."""
    budgets = CallBudgets(Storage(redis, operation_timeout_seconds=5))
    prefix = Budget("prefix", f"r:{new_verification_id()}", (Limit(1, 3_600_000),))
    await budgets.give_back(Charges("vf_late:1:t", MS, (prefix,)))
    assert isinstance(await budgets.take("vf_late:1:t", [prefix], MS), Charges)
    assert isinstance(await budgets.take("vf_next:1:t", [prefix], MS), Charges)
    assert isinstance(await budgets.take("vf_over:1:t", [prefix], MS), Refusal)


async def test_a_resend_refused_by_the_number_budget_keeps_every_code_heard(redis: Redis) -> None:
    """A resend refused by the number's budget changes nothing: an unconfirmed call's code and the
    one before it both stay accepted."""
    policy = NumberPolicy(call_limits=(Limit(2, 3_600_000),))
    store = VerificationStore(Storage(redis, operation_timeout_seconds=5), 86400, policy)
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    seq = await begin(store, vid, "222222", NOW + timedelta(seconds=30))
    await store.placement_unknown(vid, NOW + timedelta(seconds=31), seq, "timeout")
    with pytest.raises(errors.PhoneRateLimited):
        await begin(store, vid, "333333", NOW + timedelta(seconds=90))
    reservation = await store.reserve(
        vid, "t1", NOW + timedelta(seconds=90), 6, LEASE + timedelta(seconds=90)
    )
    assert [code.send_seq for code in reservation.codes] == [1, seq]


async def test_a_resend_whose_request_gave_up_is_undone_in_either_order(store: VerificationStore) -> None:
    """Releasing a resend's token undoes the send it began, and voids a begin that lands after it."""
    at = NOW + timedelta(seconds=30)
    for release_first in (False, True):
        vid = await new_pending(store)
        await placed(store, vid, 1, "c1")
        before = await store.get(vid)

        async def begin_with(token: str, vid: str = vid) -> int:
            begun = await store.begin_send(
                vid,
                at,
                token=token,
                cooldown_seconds=30,
                max_sends=5,
                code_hash=HASHER.hash(vid, "222222"),
                ttl_seconds=300,
                placement_deadline=at + timedelta(seconds=20),
            )
            assert isinstance(begun, int)
            return begun

        if release_first:
            await store.release(vid, "gave-up", at)
            with pytest.raises(errors.StorageUnavailable):
                await begin_with("gave-up")
        else:
            await begin_with("gave-up")
            await store.release(vid, "gave-up", at)
        after = await store.get(vid)
        assert after is not None
        assert before is not None
        assert replace(after, updated_at=before.updated_at) == before
        reservation = await store.reserve(vid, "t1", at, 6, LEASE + timedelta(seconds=30))
        assert [code.send_seq for code in reservation.codes] == [1]


def number_calls_key(vid: str) -> str:
    """The calls log of the verification's number (the layout ``lua/_prelude.lua`` names)."""
    shard_prefix = keys.verification_key(vid).rsplit(":", 1)[0]
    return f"{shard_prefix}:n:{phone_for(vid)}:calls"


async def test_a_given_up_resend_is_undone_even_after_it_was_called_unknown(redis: Redis) -> None:
    """A release landing after the reconciler called the begun send unknown still gives its budget back
    and drops its code, and says the send failed instead of leaving "unknown"."""
    policy = NumberPolicy(call_limits=(Limit(10, 3_600_000),))
    store = VerificationStore(Storage(redis, operation_timeout_seconds=5), 86400, policy)
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin(store, vid, "222222", at, token="gave-up")
    assert await redis.zscore(number_calls_key(vid), f"{vid}:gave-up") is not None
    await store.placement_unknown(vid, at + timedelta(seconds=1), seq, "deadline passed")
    await store.release(vid, "gave-up", at + timedelta(seconds=2))
    assert await redis.zscore(number_calls_key(vid), f"{vid}:gave-up") is None
    after = await store.get(vid)
    assert after is not None
    assert after.delivery.status is DeliveryStatus.FAILED
    reservation = await store.reserve(vid, "t1", at, 6, LEASE + timedelta(seconds=30))
    assert [code.send_seq for code in reservation.codes] == [1]


async def test_a_given_up_resend_of_an_ended_verification_leaves_nothing_behind(redis: Redis) -> None:
    """A verification canceled between a resend's begin and its release keeps no budget count and no
    schedule entry for that send."""
    policy = NumberPolicy(call_limits=(Limit(10, 3_600_000),))
    store = VerificationStore(Storage(redis, operation_timeout_seconds=5), 86400, policy)
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin(store, vid, "222222", at, token="gave-up")
    await store.cancel(vid, "c", at)
    await store.release(vid, "gave-up", at)
    assert await redis.zscore(number_calls_key(vid), f"{vid}:gave-up") is None
    assert await redis.zscore(keys.schedule_key_for(vid), keys.scheduled_call(vid, seq)) is None


async def test_a_record_written_with_epoch_times_still_expires_and_paces_resends(
    store: VerificationStore, redis: Redis
) -> None:
    """A record from before every time was kept relative to creation (epoch ms in ex and ra) keeps
    its expiry and resend time through a refused resend, a resend given back, and the sweep."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    key = keys.verification_key(vid)
    assert await redis.hmget(key, "ex", "ra") == [b"300000", b"30000"]  # as written now: after "ca"
    await redis.hset(key, mapping={"ex": MS + 300_000, "ra": MS + 30_000, "ua": MS, "dua": MS})
    with pytest.raises(errors.ResendTooSoon) as refused:
        await begin(store, vid, "222222", NOW + timedelta(seconds=10))
    assert refused.value.available_at == NOW + timedelta(seconds=30)
    later = NOW + timedelta(seconds=31)
    await begin(store, vid, "222222", later, token="gave-up")
    await store.release(vid, "gave-up", later)  # never left: expiry and resend time come back
    restored = await store.get(vid)
    assert restored is not None
    assert restored.expires_at == NOW + timedelta(seconds=300)
    assert restored.resend_available_at == NOW + timedelta(seconds=30)
    assert not await store.expire(vid, NOW + timedelta(seconds=299))
    assert await store.expire(vid, NOW + timedelta(seconds=300))


async def test_a_record_written_with_epoch_times_moves_updated_at_with_each_change(
    store: VerificationStore, redis: Redis
) -> None:
    """A record whose updated_at was kept as epoch milliseconds moves it with each later change, as
    any other record does (the stamp that never goes back compares like with like)."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    await redis.hset(keys.verification_key(vid), mapping={"ua": MS, "dua": MS})
    canceled = await store.cancel(vid, "c", NOW + timedelta(seconds=90))
    assert canceled.updated_at == NOW + timedelta(seconds=90)


def test_records_written_with_epoch_times_still_read_correctly() -> None:
    """A record from before its times were kept relative to creation reads the same times."""
    fields = {
        "st": "pending",
        "ph": "+84987654321",
        "cl": "6",
        "tt": "300",
        "ca": "1795829952706",
        "ex": "1795830252706",
        "ma": "5",
        "sq": "1",
        "sn": "1",
        "ra": "1795829982706",
        "ds": "1",
        "dst": "calling",
        "hs": "1",
        "hc": "x",
        "hp": "19456,2,1",
    }
    old = to_verification("vf_old", fields | {"ua": "1795829952906", "dua": "1795829952806"})
    new = to_verification("vf_new", fields | {"ua": "200", "dua": "100", "ex": "300000", "ra": "30000"})
    assert old.updated_at == new.updated_at
    assert old.delivery.updated_at == new.delivery.updated_at
    assert old.expires_at == new.expires_at
    assert old.resend_available_at == new.resend_available_at


# --- codes stored while their call is placed (store_code.lua) ---------------------------------------


async def new_without_code(store: VerificationStore) -> str:
    """A verification created as a start creates it now: its code's hash still to come."""
    vid = new_verification_id()
    await store.create(new(vid), None, NOW + timedelta(seconds=20))
    return vid


async def begin_later(store: VerificationStore, vid: str, at: datetime, token: str) -> int:
    """Begin a resend as the service does now: its code's hash comes under ``token``."""
    begun = await store.begin_send(
        vid,
        at,
        token=token,
        cooldown_seconds=30,
        max_sends=5,
        ttl_seconds=300,
        placement_deadline=at + timedelta(seconds=20),
    )
    assert isinstance(begun, int)
    return begun


async def test_a_check_in_flight_when_a_resend_is_undone_is_released_not_judged(
    store: VerificationStore,
) -> None:
    """A check that matched the code of a resend which then surely never left is released (nothing
    spent, asked again), not approved, even once the resend's number is reused."""
    vid = await new_pending(store, "111111")
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin(store, vid, "222222", at, token="t1")
    reservation = await store.reserve(vid, "guess", at, 6, at + timedelta(seconds=15))
    assert [code.send_seq for code in reservation.codes] == [1, seq]
    await never_left(store, vid, at, seq, "t1")
    assert await begin(store, vid, "333333", at, token="t2") == seq  # the number is reused
    with pytest.raises(errors.CheckNotRecorded):
        await store.judge(vid, "guess", at, seq)
    verification = await store.get(vid)
    assert verification is not None
    assert (verification.status, verification.attempts) == (VerificationStatus.PENDING, 0)


async def test_a_check_reserved_before_a_resend_is_judged_though_the_resend_is_undone(
    store: VerificationStore,
) -> None:
    """A check reserved before a resend began (with the current code only) is judged as usual when
    that resend surely never left."""
    vid = await new_pending(store, "111111")
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    await store.reserve(vid, "typed", at, 6, at + timedelta(seconds=15))
    seq = await begin(store, vid, "222222", at, token="t1")
    await never_left(store, vid, at, seq, "t1")
    assert (await store.judge(vid, "typed", at, 1)).verdict == "approved"


async def test_a_repeated_never_left_write_keeps_the_schedule_of_the_send_that_reused_its_number(
    store: VerificationStore, redis: Redis
) -> None:
    """A "never left" write landing again after the next resend reused its number and was placed
    leaves that placed call on the schedule, so its outcome is still looked up."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin(store, vid, "222222", at, token="t1")
    await never_left(store, vid, at, seq, "t1")
    assert await begin(store, vid, "333333", at, token="t2") == seq
    assert await placed(store, vid, seq, "c2") == "placed"
    await never_left(store, vid, at, seq, "t1")  # landing again: its reply was lost
    assert await scheduled(redis, vid, seq) is not None


async def test_a_never_left_write_after_the_reconciler_said_unknown_describes_the_send_as_failed(
    store: VerificationStore,
) -> None:
    """A resend known never to have left, after the reconciler called it unknown, shows as failed,
    and its number is not reused (the next resend is not taken for an unknown placement)."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin(store, vid, "222222", at, token="t1")
    await store.placement_unknown(vid, at + timedelta(seconds=25), seq, "placement unrecorded")
    await never_left(store, vid, at + timedelta(seconds=26), seq, "t1")
    verification = await store.get(vid)
    assert verification is not None
    assert (verification.delivery.send_seq, verification.delivery.status) == (seq, DeliveryStatus.FAILED)
    later = at + timedelta(seconds=60)
    next_seq = await begin(store, vid, "333333", later, token="t2")
    assert next_seq == seq + 1
    with pytest.raises(errors.ResendTooSoon):  # one placement at a time
        await begin(store, vid, "444444", later + timedelta(seconds=30), token="t3")


async def test_a_resend_giving_way_to_an_unknown_send_without_a_code_keeps_the_heard_code(
    store: VerificationStore,
) -> None:
    """A resend after a placement called unknown, whose code never came, keeps the current code
    (maybe the one heard) accepted instead of making the codeless send current."""
    vid = await new_pending(store, "111111")
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    lost = await begin_later(store, vid, at, "t1")  # its request gave up: no call, no code
    await store.placement_unknown(vid, at + timedelta(seconds=25), lost, "placement unrecorded")
    newest = await begin(store, vid, "333333", at + timedelta(seconds=31), token="t2")
    reservation = await store.reserve(
        vid, "check", at + timedelta(seconds=32), 6, LEASE + timedelta(seconds=60)
    )
    assert [code.send_seq for code in reservation.codes] == [1, newest]
    assert HASHER.matches(vid, "111111", reservation.codes[0].encoded_hash)


async def fields(redis: Redis, vid: str) -> dict[str, str]:
    raw = await redis.hgetall(keys.verification_key(vid))
    return {text(k): text(v) for k, v in raw.items()}


async def test_a_check_before_the_newest_code_is_stored_reserves_nothing(
    store: VerificationStore, redis: Redis
) -> None:
    """Until the first call's code is stored a check is refused unjudged; then it is judged, once."""
    vid = await new_without_code(store)
    with pytest.raises(errors.CheckNotRecorded):
        await store.reserve(vid, "t1", NOW, 6, LEASE)
    assert not any(field.startswith("r:") for field in await fields(redis, vid))
    assert await store.store_code(vid, NOW, 1, "", HASHER.hash(vid, "123456")) is True
    assert await store.store_code(vid, NOW, 1, "", HASHER.hash(vid, "654321")) is True  # a retry: kept
    reservation = await store.reserve(vid, "t1", NOW, 6, LEASE)
    assert [code.send_seq for code in reservation.codes] == [1]
    assert HASHER.matches(vid, "123456", reservation.codes[0].encoded_hash)


async def test_a_late_code_write_cannot_bring_back_a_first_call_that_never_left(
    store: VerificationStore, redis: Redis
) -> None:
    """Once the first call is recorded as never placed, its code's write is refused and nothing reappears."""
    vid = await new_without_code(store)
    await store.unplaced(
        vid,
        NOW,
        1,
        new(vid).call,
        delivery=DeliveryStatus.FAILED,
        reason="down",
        give_back_cooldown=True,
        describe=True,
    )
    assert await store.store_code(vid, NOW, 1, "", HASHER.hash(vid, "123456")) is False
    stored = await fields(redis, vid)
    assert stored["st"] == "failed"
    assert not {"nc", "hc", "ns", "hs"} & set(stored)


async def test_a_late_code_write_of_an_undone_resend_cannot_land_in_the_next_one(
    store: VerificationStore,
) -> None:
    """A resend that never left gives its send number back; the next resend reuses it, and only the
    code of the request that began it lands there."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin_later(store, vid, at, "first")
    await never_left(store, vid, at, seq, "first")
    assert await store.store_code(vid, at, seq, "first", HASHER.hash(vid, "222222")) is False
    assert await begin_later(store, vid, at, "second") == seq
    assert await store.store_code(vid, at, seq, "first", HASHER.hash(vid, "222222")) is False
    assert await store.store_code(vid, at, seq, "second", HASHER.hash(vid, "333333")) is True
    reservation = await store.reserve(vid, "t1", at, 6, LEASE + timedelta(seconds=30))
    new_code = next(code for code in reservation.codes if code.send_seq == seq)
    assert HASHER.matches(vid, "333333", new_code.encoded_hash)
    assert not HASHER.matches(vid, "222222", new_code.encoded_hash)


async def test_an_undoing_write_repeated_after_the_next_resend_began_under_its_number_changes_nothing(
    store: VerificationStore, redis: Redis
) -> None:
    """A resend that never left gives its number back and the next resend begins under it; the first
    one's "never left" write, landing again (a retry after a lost reply), leaves the new one alone."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin_later(store, vid, at, "first")

    async def never_left(token: str) -> None:
        await store.unplaced(
            vid, at, seq, f"{vid}:{token}", delivery=DeliveryStatus.FAILED, reason="down",
            give_back_cooldown=True, describe=False,
        )  # fmt: skip

    await never_left("first")
    assert await begin_later(store, vid, at, "second") == seq
    assert await store.store_code(vid, at, seq, "second", HASHER.hash(vid, "333333")) is True
    before = await fields(redis, vid)
    await never_left("first")
    after = await fields(redis, vid)
    assert (after["ns"], after["bt"], after["sq"]) == (str(seq), "second", before["sq"])
    assert after["nc"] == before["nc"]
    assert await scheduled(redis, vid, seq) is not None


async def test_a_callback_before_a_resends_code_makes_it_current_and_the_code_still_lands(
    store: VerificationStore, redis: Redis
) -> None:
    """A callback proving a resend placed before its code came makes that send current; its code then
    lands as the current code, and the old one is retired."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin_later(store, vid, at, "resend")
    await store.record_delivery(vid, at, seq, "c2", DeliveryStatus.ANSWERED, "ANSWERED", 4)
    with pytest.raises(errors.CheckNotRecorded):
        await store.reserve(vid, "t1", at, 6, LEASE + timedelta(seconds=30))
    assert await store.store_code(vid, at, seq, "other", HASHER.hash(vid, "999999")) is False
    assert await store.store_code(vid, at, seq, "resend", HASHER.hash(vid, "222222")) is True
    assert "bt" not in await fields(redis, vid)
    assert (await placed(store, vid, seq, "c2")) == "placed"
    await assert_only_code(store, vid, at, seq, "222222")


async def a_resend_made_current_before_its_code(store: VerificationStore, vid: str, token: str) -> int:
    """After the first call, a resend begun by ``token`` whose callback proves it placed before its
    code came: it is the current send, without a code yet. Its send number."""
    await placed(store, vid, 1, "c1")
    seq = await begin_later(store, vid, NOW + timedelta(seconds=30), token)
    await store.record_delivery(
        vid, NOW + timedelta(seconds=30), seq, "c2", DeliveryStatus.ANSWERED, "ANSWERED", 4
    )
    return seq


async def test_a_current_sends_late_code_still_lands_after_the_next_resend_began(
    store: VerificationStore, redis: Redis
) -> None:
    """The code of a send made current before it came lands even once a newer resend has begun (whose
    begin takes over the begun-by token), and no check is judged while it is on its way."""
    vid = await new_pending(store)
    heard = await a_resend_made_current_before_its_code(store, vid, "a")
    at = NOW + timedelta(seconds=60)
    newer = await begin_later(store, vid, at, "b")
    assert await store.store_code(vid, at, newer, "b", HASHER.hash(vid, "333333")) is True
    with pytest.raises(errors.CheckNotRecorded):  # the code heard may be the one still to come
        await store.reserve(vid, "t1", at, 6, LEASE + timedelta(seconds=60))
    assert await store.store_code(vid, at, heard, "b", HASHER.hash(vid, "999999")) is False
    assert await store.store_code(vid, at, heard, "a", HASHER.hash(vid, "222222")) is True
    stored = await fields(redis, vid)
    assert "ht" not in stored
    assert stored["bt"] == "b"  # the newer resend's request still finds what it began
    reservation = await store.reserve(vid, "t1", at, 6, LEASE + timedelta(seconds=60))
    codes = {code.send_seq: code.encoded_hash for code in reservation.codes}
    assert sorted(codes) == [heard, newer]
    assert HASHER.matches(vid, "222222", codes[heard])
    assert HASHER.matches(vid, "333333", codes[newer])


async def test_a_current_sends_late_code_lands_after_a_newer_resend_never_left(
    store: VerificationStore, redis: Redis
) -> None:
    """When the newer resend's call surely never left, the current send's late code still lands and
    is then the only code."""
    vid = await new_pending(store)
    heard = await a_resend_made_current_before_its_code(store, vid, "a")
    at = NOW + timedelta(seconds=60)
    newer = await begin_later(store, vid, at, "b")
    await store.unplaced(
        vid,
        at,
        newer,
        f"{vid}:b",
        delivery=DeliveryStatus.REJECTED,
        reason="refused",
        give_back_cooldown=False,
        describe=True,
    )
    assert await store.store_code(vid, at, heard, "a", HASHER.hash(vid, "222222")) is True
    assert not {"ht", "bt"} & set(await fields(redis, vid))
    await assert_only_code(store, vid, at, heard, "222222")


async def placed_with_code(
    store: VerificationStore, vid: str, at: datetime, seq: int, token: str, code: str
) -> str:
    """Record send ``seq``'s call placed, carrying its code (begun by ``token``); its outcome."""
    send_code = SendCode(token, HASHER.hash(vid, code))
    result = await store.placed(vid, at, seq, f"c{seq}", ttl_seconds=300, check_outcome_at=at, code=send_code)
    return result.outcome


async def assert_only_code(store: VerificationStore, vid: str, at: datetime, seq: int, code: str) -> None:
    """A check reserved at ``at`` finds one code to judge against, send ``seq``'s, and it is ``code``."""
    reservation = await store.reserve(vid, "t1", at, 6, LEASE + (at - NOW))
    assert [found.send_seq for found in reservation.codes] == [seq]
    assert HASHER.matches(vid, code, reservation.codes[0].encoded_hash)


async def test_a_placement_carrying_its_code_stores_both_in_one_script(
    store: VerificationStore, redis: Redis
) -> None:
    """A first call's code that comes with its placement is stored as the current code, and it checks."""
    vid = await new_without_code(store)
    assert await placed_with_code(store, vid, NOW, 1, "", "123456") == "placed"
    stored = await fields(redis, vid)
    assert {"hc", "hp"} <= set(stored)
    assert not {"nc", "np", "ns"} & set(stored)
    await assert_only_code(store, vid, NOW, 1, "123456")


async def test_a_placement_carrying_the_code_of_another_requests_send_stores_no_code(
    store: VerificationStore, redis: Redis
) -> None:
    """A resend's placement whose code names a request that did not begin that send records the call
    but not the code, as a late code write would be refused."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin_later(store, vid, at, "resend")
    await placed_with_code(store, vid, at, seq, "other", "999999")
    stored = await fields(redis, vid)
    assert stored["hs"] == str(seq)
    assert "hc" not in stored  # the send's own code is still to come


async def test_a_resends_placement_carrying_its_code_after_its_callback_makes_it_the_current_code(
    store: VerificationStore, redis: Redis
) -> None:
    """A callback proved a resend placed before its code came: the placement carrying the code
    stores it as the current code, as a code write of its own would, and it checks."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin_later(store, vid, at, "resend")
    await store.record_delivery(vid, at, seq, f"c{seq}", DeliveryStatus.ANSWERED, "ANSWERED", 4)
    assert await placed_with_code(store, vid, at, seq, "resend", "222222") == "placed"
    assert "bt" not in await fields(redis, vid)
    await assert_only_code(store, vid, at, seq, "222222")


async def test_a_change_stamped_by_a_clock_stepped_back_does_not_move_updated_at_back(
    store: VerificationStore,
) -> None:
    """A change recorded with a storage clock that stepped back (a failover to a primary whose clock
    is behind) keeps updated_at where it was, never before created_at."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    canceled = await store.cancel(vid, "c", NOW - timedelta(seconds=30))
    assert canceled.updated_at >= canceled.created_at


async def test_a_placement_nobody_recorded_of_an_ended_verification_shows_as_unknown(
    store: VerificationStore, redis: Redis
) -> None:
    """A verification that ended (here canceled) before anyone learnt what became of its first call
    stays ended, and its delivery says the call's fate is unknown rather than queued for good."""
    vid = await new_pending(store)
    await store.cancel(vid, "cancel-1", NOW)
    await store.placement_unknown(vid, NOW + timedelta(seconds=25), 1, "placement unrecorded")
    verification = await store.get(vid)
    assert verification is not None
    assert verification.status is VerificationStatus.CANCELED
    delivery = verification.delivery
    assert (delivery.send_seq, delivery.status, delivery.reason) == (
        1,
        DeliveryStatus.UNKNOWN,
        "placement unrecorded",
    )
    assert verification.updated_at == delivery.updated_at  # a client polling updated_at sees it
    assert await scheduled(redis, vid, 1) is None


async def test_a_resend_released_after_it_was_called_unknown_moves_updated_at_with_its_delivery(
    store: VerificationStore,
) -> None:
    """A resend the reconciler called unknown, then released (it never reached the provider), moves
    the verification's updated_at with the delivery it rewrites, so neither is ever behind the other."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    await begin(store, vid, "222222", at, token="t1")
    await store.placement_unknown(vid, at + timedelta(seconds=25), 2, "placement unrecorded")
    await store.release(vid, "t1", at + timedelta(seconds=30))
    verification = await store.get(vid)
    assert verification is not None
    assert verification.updated_at == verification.delivery.updated_at == at + timedelta(seconds=30)


async def test_a_late_unknown_for_a_resend_released_after_a_cancel_leaves_the_delivery_shown(
    store: VerificationStore, redis: Redis
) -> None:
    """A resend released (it never reached the provider) after its verification was canceled, then
    called unknown by a reconciler that had claimed it meanwhile, is not described as unknown."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin(store, vid, "222222", at, token="t1")
    await store.cancel(vid, "c", at + timedelta(seconds=1))
    await store.release(vid, "t1", at + timedelta(seconds=2))
    await store.placement_unknown(vid, at + timedelta(seconds=25), seq, "placement unrecorded")
    verification = await store.get(vid)
    assert verification is not None
    assert (verification.delivery.send_seq, verification.delivery.call_id) == (1, "c1")


async def test_a_late_unknown_for_a_resend_known_never_to_have_left_leaves_the_delivery_shown(
    store: VerificationStore, redis: Redis
) -> None:
    """The reconciler calling unknown a resend already known never to have left (the provider was
    down) changes nothing of the pending verification's delivery, which still shows the call that rang."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    at = NOW + timedelta(seconds=30)
    seq = await begin(store, vid, "222222", at, token="t1")
    await never_left(store, vid, at + timedelta(seconds=1), seq, "t1")
    await store.placement_unknown(vid, at + timedelta(seconds=25), seq, "placement unrecorded")
    verification = await store.get(vid)
    assert verification is not None
    assert verification.status is VerificationStatus.PENDING
    assert (verification.delivery.send_seq, verification.delivery.call_id) == (1, "c1")
    assert await scheduled(redis, vid, seq) is None


async def test_a_placement_carrying_its_code_after_the_verification_ended_stores_no_code(
    store: VerificationStore, redis: Redis
) -> None:
    """A verification canceled while its first call was placed takes no code from the placement."""
    vid = await new_without_code(store)
    await store.cancel(vid, "cancel-1", NOW)
    assert await placed_with_code(store, vid, NOW, 1, "", "123456") == "canceled"
    assert not {"nc", "hc"} & set(await fields(redis, vid))


async def test_a_chosen_code_said_again_waits_for_its_hash(store: VerificationStore) -> None:
    """A resend of the same code cannot begin before that code's hash is stored (it copies it)."""
    vid = await new_without_code(store)
    await store.placement_unknown(vid, NOW + timedelta(seconds=1), 1, "timeout")
    at = NOW + timedelta(seconds=30)

    async def again() -> int:
        begun = await store.begin_send(
            vid,
            at,
            token="again",
            cooldown_seconds=30,
            max_sends=5,
            same_code=True,
            ttl_seconds=300,
            placement_deadline=at + timedelta(seconds=20),
        )
        assert isinstance(begun, int)
        return begun

    with pytest.raises(errors.ResendTooSoon):
        await again()
    await store.store_code(vid, at, 1, "", HASHER.hash(vid, "123456"))
    seq = await again()
    reservation = await store.reserve(vid, "t1", at, 6, LEASE + timedelta(seconds=30))
    assert [code.send_seq for code in reservation.codes] == [1, seq]
    assert all(HASHER.matches(vid, "123456", code.encoded_hash) for code in reservation.codes)


# --- a start's other budgets taken by the create script (one server) --------------------------------


def spent_budget(kind: BudgetKind = "prefix") -> Budget:
    """A budget of its own subject allowing one call an hour."""
    return Budget(kind, f"r:{new_verification_id()}", (Limit(1, 3_600_000),))


def another_start_for_the_number_of(first: str) -> NewVerification:
    """A new verification of ``first``'s number, its id drawn into that number's shard."""
    phone = phone_for(first)
    return replace(new(keys.id_in_number_shard(phone, new_verification_id)), phone=phone)


async def counted(redis: Redis, budget: Budget, call: str) -> bool:
    return await redis.zscore(keys.budget_keys(budget.subject)[0], call) is not None


async def test_a_create_on_one_server_takes_every_budget_in_the_same_step(
    store: VerificationStore, redis: Redis
) -> None:
    """On one server the create script counts the call in every budget it is given, with the record."""
    assert store.takes_budgets_in_create
    vid, budgets = new_verification_id(), [spent_budget("prefix"), spent_budget("global")]
    started = await store.create(new(vid), None, NOW + timedelta(seconds=20), budgets)
    assert isinstance(started, Started)
    assert started.outcome == "created"
    assert [await counted(redis, budget, f"{vid}:1:t") for budget in budgets] == [True, True]


async def test_a_budget_refusing_a_create_leaves_nothing_and_the_longest_wait_is_named(
    store: VerificationStore, redis: Redis
) -> None:
    """When budgets refuse, nothing is created, no budget keeps the call, and the refusal named is
    the one that waits longest (a day's cap until midnight, over a range's hour)."""
    tenant_day = Budget("tenant_day", f"t:{new_verification_id()}", (Limit(1, 86_400_000),), MS + 86_400_000)
    allowing, prefix = spent_budget("client"), spent_budget("prefix")
    await CallBudgets(Storage(redis, operation_timeout_seconds=5)).take("earlier", [prefix, tenant_day], MS)
    vid = new_verification_id()
    refused = await store.create(new(vid), None, NOW, [allowing, prefix, tenant_day])
    assert refused == Refusal(tenant_day, 86_400_000)
    assert not await counted(redis, allowing, f"{vid}:1:t")
    assert await redis.exists(keys.verification_key(vid)) == 0
    assert await redis.zscore(number_calls_key(vid), f"{vid}:1:t") is None


async def test_a_create_answering_the_pending_verification_gives_its_budgets_back(
    store: VerificationStore, redis: Redis
) -> None:
    """A create that meets the tenant's pending verification of the number keeps no budget count."""
    first = await new_pending(store)
    again = another_start_for_the_number_of(first)
    vid, budget = again.id, spent_budget()
    started = await store.create(again, None, NOW, [budget])
    assert isinstance(started, Started)
    assert started.outcome == "existing"
    assert started.verification.id == first
    assert not await counted(redis, budget, f"{vid}:1:t")


async def test_a_create_retried_after_its_refusal_passed_counts_its_budgets(
    store: VerificationStore, redis: Redis
) -> None:
    """A create refused after it took its budgets (a pending verification met) does not leave the
    call marked given back: the identical request retried once the refusal passed is counted."""
    first = await new_pending(store)
    again = another_start_for_the_number_of(first)
    vid, budget = again.id, spent_budget()
    existing = await store.create(again, None, NOW, [budget])
    assert isinstance(existing, Started)
    assert existing.outcome == "existing"
    await store.cancel(first, "", NOW)
    created = await store.create(again, None, NOW, [budget])
    assert isinstance(created, Started)
    assert created.outcome == "created"
    assert await counted(redis, budget, f"{vid}:1:t")


async def test_a_create_refused_by_the_number_gives_its_budgets_back(redis: Redis) -> None:
    """A create the number's own budget refuses keeps no count in the other budgets either."""
    policy = NumberPolicy(call_limits=(Limit(1, 3_600_000),))
    store = VerificationStore(Storage(redis, operation_timeout_seconds=5), 86400, policy)
    first = await new_pending(store)
    await store.cancel(first, "", NOW)
    again = another_start_for_the_number_of(first)
    vid, budget = again.id, spent_budget()
    with pytest.raises(errors.PhoneRateLimited):
        await store.create(again, None, NOW, [budget])
    assert not await counted(redis, budget, f"{vid}:1:t")


async def begin_with(
    store: VerificationStore, vid: str, at: datetime, budgets: list[Budget], token: str
) -> int | Refusal:
    """Begin a resend of ``vid`` at ``at`` whose other budgets the script takes (the call <vid>:<token>)."""
    return await store.begin_send(
        vid,
        at,
        token=token,
        cooldown_seconds=30,
        max_sends=5,
        code_hash=HASHER.hash(vid, "222222"),
        ttl_seconds=300,
        placement_deadline=at + timedelta(seconds=20),
        budgets=budgets,
    )


async def test_a_resend_on_one_server_takes_its_budgets_or_gives_them_back_when_refused(
    store: VerificationStore, redis: Redis
) -> None:
    """A resend refused by its cooldown keeps no budget count; once the cooldown passed, the same
    script counts the call in every budget."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    budgets = [spent_budget("prefix"), spent_budget("global")]
    with pytest.raises(errors.ResendTooSoon):
        await begin_with(store, vid, NOW + timedelta(seconds=10), budgets, token="early")
    assert [await counted(redis, budget, f"{vid}:early") for budget in budgets] == [False, False]
    assert await begin_with(store, vid, NOW + timedelta(seconds=30), budgets, token="later") == 2
    assert [await counted(redis, budget, f"{vid}:later") for budget in budgets] == [True, True]


async def test_a_resend_retried_after_its_cooldown_passed_counts_its_budgets(
    store: VerificationStore, redis: Redis
) -> None:
    """The same resend request (same token) refused by its cooldown and retried after it passed is
    counted in every budget, not let through as a call given back."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    budgets = [spent_budget("prefix"), spent_budget("global")]
    with pytest.raises(errors.ResendTooSoon):
        await begin_with(store, vid, NOW + timedelta(seconds=10), budgets, token="same")
    assert await begin_with(store, vid, NOW + timedelta(seconds=30), budgets, token="same") == 2
    assert [await counted(redis, budget, f"{vid}:same") for budget in budgets] == [True, True]
    assert [await redis.zcard(keys.budget_keys(budget.subject)[1]) for budget in budgets] == [0, 0]


async def test_a_budget_refusing_a_resend_begins_nothing(store: VerificationStore, redis: Redis) -> None:
    """A resend one of its budgets refuses is answered with that refusal, and nothing is begun."""
    vid = await new_pending(store)
    await placed(store, vid, 1, "c1")
    allowing, prefix = spent_budget("client"), spent_budget("prefix")
    await CallBudgets(Storage(redis, operation_timeout_seconds=5)).take("earlier", [prefix], MS)
    refused = await begin_with(store, vid, NOW + timedelta(seconds=30), [allowing, prefix], "r")
    assert isinstance(refused, Refusal)
    assert refused.budget == prefix
    assert not await counted(redis, allowing, f"{vid}:r")
    assert await redis.hget(keys.verification_key(vid), "sq") == b"1"
