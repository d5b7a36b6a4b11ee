"""The event outbox on a real server: leases, their names, and order per verification."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta

import httpx
import pytest
from redis.asyncio import Redis

from otpservice.adapters.storage import keys
from otpservice.adapters.storage.outbox import EventOutbox
from otpservice.adapters.storage.records import text
from otpservice.adapters.storage.scripts import Storage
from otpservice.adapters.storage.store import VerificationStore
from otpservice.domain.clock import to_millis
from otpservice.service.verifications import new_verification_id
from otpservice.service.webhooks import Endpoint, WebhookDispatcher
from tests.support.service import ManualClock
from tests.test_store import HASHER, NOW, new

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="


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


async def test_only_an_event_s_first_lease_is_marked_first_even_after_its_holder_died(redis: Redis) -> None:
    """The first lease of an event is marked first (it counts as emitted); a lease taken over from a
    holder that died, or after a failed try, is not, so the event is not counted again."""
    storage = Storage(redis, operation_timeout_seconds=5)
    store, outbox = VerificationStore(storage, 86400), EventOutbox(storage)
    vid = await _hooked_verification(store)
    shard = keys.shard_of(vid)
    later = NOW + timedelta(days=366)

    async def leases(at: datetime) -> list[tuple[int, bool]]:
        claimed = await outbox.claim(shard, at, 1000, at + timedelta(seconds=1))
        return [(e.tries, e.first_lease) for e in claimed if e.verification.id == vid]

    assert await leases(later) == [(0, True)]
    assert await leases(later + timedelta(seconds=2)) == [(0, False)]  # its holder died: taken over
    [event] = [
        e
        for e in await outbox.claim(shard, later + timedelta(seconds=4), 1000, later + timedelta(seconds=5))
        if e.verification.id == vid
    ]
    await outbox.settle(
        event, later + timedelta(seconds=4), "retry", retry_at=later + timedelta(seconds=6), tries=1
    )
    assert await leases(later + timedelta(seconds=6)) == [(1, False)]


async def test_a_claim_run_again_answers_what_it_leased_the_first_time(redis: Redis) -> None:
    """A claim the client sends again (its reply was lost) answers the events it leased, first lease
    included, instead of nothing: they are sent now, and counted as emitted once."""
    storage = Storage(redis, operation_timeout_seconds=5)
    store = VerificationStore(storage, 86400)
    vid = await _hooked_verification(store)
    schedule, outbox, *_ = keys.outbox_keys(keys.shard_of(vid))
    later = NOW + timedelta(days=367)
    claim = [to_millis(later), 1000, to_millis(later + timedelta(seconds=30)), "lease-once"]

    async def mine() -> list[tuple[str, str]]:
        words = [text(word) for word in await storage.run("claim_events", [schedule, outbox], claim)]
        return [(words[i], words[i + 3]) for i in range(0, len(words), 4) if words[i].startswith(vid)]

    first = await mine()
    assert first == [(f"{vid}:1", "1")]
    assert await mine() == first


async def test_an_event_whose_send_raises_anything_is_settled_and_lets_the_next_go(redis: Redis) -> None:
    """A send failing with an error that is not httpx's own still counts as a failed try (here past the
    retry window, so dead-lettered), and the verification's next event is sent after it."""
    storage = Storage(redis, operation_timeout_seconds=5)
    store, outbox = VerificationStore(storage, 86400), EventOutbox(storage)
    vid = await _hooked_verification(store)
    clock = ManualClock(NOW + timedelta(days=400))  # past every other test's events in this shard
    sent: list[bytes] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        if request.content == f"{vid} verification.created".encode():
            raise RuntimeError("not an httpx error")
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as http:
        dispatcher = WebhookDispatcher(
            outbox=outbox,
            http=http,
            clock=clock,
            endpoints={"default": Endpoint.of("https://hooks.example.vn/h", SECRET)},
            render=lambda event: f"{event.verification.id} {event.type}".encode(),
            retry_hours=0,
            receiver_timeout_seconds=5,
        )
        for _ in range(4):  # every shard's due events, until this verification's second is sent
            await dispatcher.dispatch_round()
            await dispatcher.drain()
            if len([body for body in sent if vid.encode() in body]) >= 2:
                break
    mine = [body.decode() for body in sent if vid.encode() in body]
    assert mine == [f"{vid} verification.created", f"{vid} verification.canceled"]
    dead = [letter for letter in await outbox.dead_letters() if letter.event.verification.id == vid]
    assert [(letter.event.type, letter.last_error) for letter in dead] == [
        ("verification.created", "RuntimeError")
    ]


async def test_one_dead_letter_this_version_cannot_read_does_not_hide_the_others(redis: Redis) -> None:
    """A dead letter whose payload cannot be read (a newer version's, say) is left out of the list,
    and every other dead letter is still listed."""
    storage = Storage(redis, operation_timeout_seconds=5)
    store, outbox = VerificationStore(storage, 86400), EventOutbox(storage)
    vid = await _hooked_verification(store)
    shard = keys.shard_of(vid)
    later = NOW + timedelta(days=800)  # past every other test's events in this shard
    [first] = [
        e
        for e in await outbox.claim(shard, later, 1000, later + timedelta(seconds=30))
        if e.verification.id == vid
    ]
    await outbox.settle(first, later, "dead", tries=1, error="HTTP 500")
    dead_key = keys.outbox_keys(shard)[2]
    await redis.hset(
        dead_key, mapping={"vf_unreadable:1": '{"type": "x", "at": 1, "fields": {"st": "paused"}}'}
    )
    listed = [letter.event.verification.id for letter in await outbox.dead_letters()]
    assert vid in listed
    assert "vf_unreadable" not in listed


async def test_a_dead_letter_is_dropped_30_days_after_it_died_even_while_others_keep_dying(
    redis: Redis,
) -> None:
    """Each dead letter is kept 30 days from its own death: one that old is dropped when another
    event of the shard dies, however often events keep dying."""
    storage = Storage(redis, operation_timeout_seconds=5)
    store, outbox = VerificationStore(storage, 86400), EventOutbox(storage)
    old, young = await _hooked_verification(store), await _hooked_verification(store)
    while keys.shard_of(young) != keys.shard_of(old):  # both in one shard
        young = await _hooked_verification(store)
    shard = keys.shard_of(old)
    first_death = NOW + timedelta(days=1200)  # past every other test's events in this shard

    async def kill(vid: str, at: datetime) -> None:
        [event] = [
            e
            for e in await outbox.claim(shard, at, 1000, at + timedelta(seconds=30))
            if e.verification.id == vid
        ]
        await outbox.settle(event, at, "dead", tries=1, error="HTTP 500")

    await kill(old, first_death)
    await kill(young, first_death + timedelta(days=29))
    listed = {letter.event.verification.id for letter in await outbox.dead_letters()}
    assert {old, young} <= listed
    later_death = first_death + timedelta(days=30, seconds=1)
    [next_event] = [
        e
        for e in await outbox.claim(shard, later_death, 1000, later_death + timedelta(seconds=30))
        if e.verification.id == young
    ]
    await outbox.settle(next_event, later_death, "dead", tries=1, error="HTTP 500")
    listed = {letter.event.verification.id for letter in await outbox.dead_letters()}
    assert old not in listed
    assert young in listed
    assert await redis.zscore(keys.outbox_keys(shard)[3], f"{old}:1") is None
