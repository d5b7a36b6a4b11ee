"""The code hash of a call: written once, by its own task or by whoever took the write over."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from otpservice.adapters.storage.store import VerificationStore
from otpservice.service.placement import CodeHash
from tests.test_store import HASHER, NOW, fields, new_without_code, redis, store

__all__ = ["redis", "store"]  # the fixtures of tests/test_store.py, used here too


def _code_writes() -> float:
    """How many times this process ran store_code (otp_storage_operations)."""
    return REGISTRY.get_sample_value("otp_storage_operations_total", {"operation": "store_code"}) or 0.0


def _first_send_write(store: VerificationStore, vid: str) -> Callable[[str], Awaitable[object]]:
    """The write a start hands its code hash: store_code into the first send."""
    return lambda encoded: store.store_code(vid, NOW, 1, "", encoded)


async def _hash_to_come(store: VerificationStore) -> tuple[str, asyncio.Future[str], CodeHash]:
    """A verification created without its code, the code's hash still being computed (the future
    the test settles), and the CodeHash that writes it into the first send."""
    vid = await new_without_code(store)
    hashing: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    code_hash = CodeHash(hashing)
    code_hash.store_with(_first_send_write(store, vid), token="")
    return vid, hashing, code_hash


async def test_a_write_taken_over_and_given_back_is_made_once_the_hash_is_ready(
    store: VerificationStore, redis: Redis
) -> None:
    """A taker that did not store the hash (it failed or was cancelled) leaves the write to be made."""
    vid, hashing, code_hash = await _hash_to_come(store)
    assert code_hash.take_write()
    code_hash.settle_taken(stored=False)
    hashing.set_result(HASHER.hash(vid, "123456"))
    await code_hash.stored()
    assert "nc" in await fields(redis, vid)


async def test_a_write_taken_over_and_stored_by_the_taker_is_not_made_again(store: VerificationStore) -> None:
    """Once the taker stored the hash with its own script, the code's own write never runs."""
    vid, hashing, code_hash = await _hash_to_come(store)
    writes_before = _code_writes()
    assert code_hash.take_write()
    hashing.set_result(HASHER.hash(vid, "123456"))
    await code_hash.hashed()
    code_hash.settle_taken(stored=True)
    await code_hash.stored()
    await code_hash.write_again()  # a repair finds it stored
    assert _code_writes() == writes_before


async def test_a_write_that_has_begun_cannot_be_taken_over(store: VerificationStore, redis: Redis) -> None:
    """With the hash ready and its write under way, a taker is told to wait for that write instead."""
    vid, hashing, code_hash = await _hash_to_come(store)
    hashing.set_result(HASHER.hash(vid, "123456"))
    for _ in range(3):  # the write's task wakes up and sends its script
        await asyncio.sleep(0)
    assert not code_hash.take_write()
    await code_hash.stored()
    assert "nc" in await fields(redis, vid)


async def test_a_write_taken_over_after_the_hash_came_but_before_its_task_woke_is_the_takers(
    store: VerificationStore,
) -> None:
    """The hash is ready, its task not yet running: the taker gets the write, and the task makes none."""
    vid, hashing, code_hash = await _hash_to_come(store)
    writes_before = _code_writes()
    hashing.set_result(HASHER.hash(vid, "123456"))
    assert code_hash.take_write()
    await code_hash.hashed()
    code_hash.settle_taken(stored=True)
    await code_hash.stored()
    assert _code_writes() == writes_before


async def test_a_write_given_back_while_its_task_waits_on_the_taker_is_made(
    store: VerificationStore, redis: Redis
) -> None:
    """The task woke with the hash and waits on the taker; the taker gives up: the task writes it."""
    vid, hashing, code_hash = await _hash_to_come(store)
    assert code_hash.take_write()
    hashing.set_result(HASHER.hash(vid, "123456"))
    for _ in range(3):  # the task wakes up with the hash and waits on the taker
        await asyncio.sleep(0)
    code_hash.settle_taken(stored=False)
    await code_hash.stored()
    assert "nc" in await fields(redis, vid)


async def test_a_hash_that_failed_after_the_write_was_taken_over_reaches_the_taker_and_writes_nothing(
    store: VerificationStore, redis: Redis
) -> None:
    """Hashing raised: the taker sees the error, and nothing is written for the code."""
    vid, hashing, code_hash = await _hash_to_come(store)
    assert code_hash.take_write()
    hashing.set_exception(RuntimeError("argon2 failed"))
    with pytest.raises(RuntimeError, match="argon2 failed"):
        await code_hash.hashed()
    code_hash.settle_taken(stored=False)
    with pytest.raises(RuntimeError, match="argon2 failed"):
        await code_hash.stored()
    assert not {"nc", "hc"} & set(await fields(redis, vid))
