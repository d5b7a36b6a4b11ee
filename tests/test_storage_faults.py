"""Storage faults against real server processes: restarts, stalls (SIGSTOP) and kills (SIGKILL).

Each test stops, pauses or kills a real valkey-server under the running service, then checks what
clients were told and what state was left once the server answers again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.flows import InBackground, assert_problem, heard_code
from tests.support.invariants import stranded_after_settling
from tests.support.provider import SlowAnswers
from tests.support.redis_servers import ServerProcess, standalone_server, wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import ServiceHandle, running_service

# Each storage try gets 0.25 s; three tries and their backoff bound an operation at 1.75 s.
FAST_STORAGE: dict[str, Any] = {"redis_timeout_seconds": 0.25}
BOUND = 0.25 * 3 + 1.0


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    """A server of the test's own, with AOF on so that its data survives a kill."""
    with standalone_server(appendonly=True) as process:
        yield process


@pytest.fixture
def faulty(server: ServerProcess, sandbox: SandboxHandle) -> Iterator[ServiceHandle]:
    with running_service(server.url, sandbox.url, **FAST_STORAGE) as service:
        yield service


def settle(server: ServerProcess, service: ServiceHandle) -> None:
    """Wait until nothing is stranded (repairs landed, placement deadlines passed)."""
    assert stranded_after_settling(server.url, service) == []


async def test_restart_under_load_fails_no_request_once_the_server_answers(
    server: ServerProcess, faulty: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """After a restart every pooled connection is dead, yet no request fails once the server answers."""
    phones = [f"09123450{n:02d}" for n in range(10)]
    async with faulty.async_client() as client:
        created = await asyncio.gather(*(client.post("/otp", json={"phone": p}) for p in phones))
        ids = [answer.json()["id"] for answer in created]
        await asyncio.gather(*(client.get(f"/otp/{vid}") for vid in ids for _ in range(3)))  # fill the pool
        server.restart()
        answers = await asyncio.gather(
            *(client.get(f"/otp/{vid}") for vid in ids for _ in range(3)),
            *(client.post("/otp", json={"phone": f"09123460{n:02d}"}) for n in range(10)),
            *(
                client.post("/verify", json={"id": vid, "code": heard_code(sandbox, phone)})
                for vid, phone in zip(ids, phones, strict=True)
            ),
        )
    assert [a.status_code for a in answers if a.status_code >= 400] == []
    verified = answers[-len(ids) :]
    assert all(a.json()["valid"] and a.json()["attempts"] == 1 for a in verified)


async def test_kill_and_restart_fails_no_request_once_the_server_answers(
    server: ServerProcess, faulty: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """After SIGKILL and a restart (AOF kept the data) requests succeed again at once."""
    async with faulty.async_client() as client:
        vid = (await client.post("/otp", json={"phone": "0912345001"})).json()["id"]
        await asyncio.gather(*(client.get(f"/otp/{vid}") for _ in range(10)))
        server.kill()
        down = await client.get(f"/otp/{vid}")
        assert_problem(down, 503, "storage_unavailable")
        assert down.headers["retry-after"]
        server.start()
        answers = await asyncio.gather(*(client.get(f"/otp/{vid}") for _ in range(30)))
        approved = await client.post("/verify", json={"id": vid, "code": heard_code(sandbox, "0912345001")})
    assert [a.status_code for a in answers] == [200] * 30
    assert approved.json()["valid"] is True


async def test_a_stall_during_right_code_checks_still_lets_that_code_approve(
    server: ServerProcess, faulty: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """Five right codes sent while Redis stalls all get 503 in bounded time; afterwards the code approves."""
    async with faulty.async_client() as client:
        vid = (await client.post("/otp", json={"phone": "0912345002"})).json()["id"]
        code = heard_code(sandbox, "0912345002")
        server.pause()
        started = time.monotonic()
        try:
            stalled = await asyncio.gather(
                *(client.post("/verify", json={"id": vid, "code": code}) for _ in range(5))
            )
            waited = time.monotonic() - started
        finally:
            server.resume()
        for answer in stalled:
            body = assert_problem(answer, 503, "storage_unavailable")
            assert body["id"] == vid
        assert waited < BOUND + 1.0
        deadline = time.monotonic() + 15
        while True:
            retry = await client.post("/verify", json={"id": vid, "code": code})
            if retry.status_code == 200:
                break
            # the stalled reservations landed late; their releases are on the way
            assert retry.json()["code"] in ("attempts_in_flight", "storage_unavailable"), retry.text
            assert time.monotonic() < deadline, retry.text
            await asyncio.sleep(0.1)
        final = (await client.get(f"/otp/{vid}")).json()
    assert retry.json()["valid"] is True
    assert (final["status"], final["attempts"]) == ("approved", 1)
    settle(server, faulty)


def test_a_stall_after_the_call_was_placed_answers_with_the_id(
    server: ServerProcess, sandbox: SandboxHandle
) -> None:
    """Redis stalls between placing a call and recording it: 503 with the id, and the code works later."""
    with running_service(
        server.url, sandbox.url, provider_transport=SlowAnswers(0.5), **FAST_STORAGE
    ) as service:
        starting = InBackground(service, lambda client: client.post("/otp", json={"phone": "0912345003"}))
        wait_until(lambda: bool(sandbox.calls("0912345003")), 5, "the call being placed")
        server.pause()
        try:
            answer = starting.answer(timeout=10)
        finally:
            server.resume()
        body = assert_problem(answer, 503, "storage_unavailable")
        assert body["call_placed"] is True
        vid = body["id"]
        with service.client() as client:
            wait_until(
                lambda: client.get(f"/otp/{vid}").json()["delivery"]["call_id"] is not None,
                10,
                "the placed call being recorded",
                interval=0.05,
            )
            approved = client.post("/verify", json={"id": vid, "code": heard_code(sandbox, "0912345003")})
        assert approved.json()["valid"] is True
        settle(server, service)


def test_a_stall_before_the_call_answers_that_nothing_was_placed(
    server: ServerProcess, faulty: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """With Redis stalled before anything is stored, a start is 503 and no call is placed, now or later."""
    with faulty.client() as client:
        server.pause()
        try:
            refused = client.post("/otp", json={"phone": "0912345004"})
        finally:
            server.resume()
        body = assert_problem(refused, 503, "storage_unavailable")
        assert body["call_placed"] is False
        settle(server, faulty)
        assert sandbox.calls("0912345004") == []
        if "id" in body:  # the create may land late, and its void surely lands: it reads failed
            wait_until(
                lambda: client.get(f"/otp/{body['id']}").json().get("status") == "failed",
                15,
                "the void of the stalled create to land",
            )


def test_a_stalled_idempotency_claim_leaves_the_key_free_for_the_repeat(
    server: ServerProcess, faulty: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """A start whose key's claim stalled answers 503 saying no call was placed, and its repeat runs
    once the server answers (the claim is given up; test_idempotency_records: even landing late)."""
    key = {"Idempotency-Key": "stalled-claim"}
    with faulty.client() as client:
        server.pause()
        try:
            refused = client.post("/otp", json={"phone": "0912345005"}, headers=key)
        finally:
            server.resume()
        assert assert_problem(refused, 503, "storage_unavailable")["call_placed"] is False
        repeat = client.post("/otp", json={"phone": "0912345005"}, headers=key)
    assert repeat.status_code == 201, repeat.text
    assert len(sandbox.calls("0912345005")) == 1


async def test_kill_during_creates_strands_no_verification(
    server: ServerProcess, sandbox: SandboxHandle
) -> None:
    """Creates in flight when Redis is killed and restarted leave every verification verifiable or failed."""
    with running_service(
        server.url, sandbox.url, provider_transport=SlowAnswers(0.3), **FAST_STORAGE
    ) as service:
        phones = [f"09123470{n:02d}" for n in range(16)]
        async with service.async_client() as client:

            async def start(phone: str, after: float) -> httpx.Response:
                await asyncio.sleep(after)
                return await client.post("/otp", json={"phone": phone})

            starts = asyncio.gather(*(start(phone, n * 0.05) for n, phone in enumerate(phones)))
            await asyncio.sleep(0.35)
            server.kill()
            await asyncio.sleep(0.3)
            server.start()
            answers = await starts
        settle(server, service)
        with service.client() as checker:
            for phone, answer in zip(phones, answers, strict=True):
                body = answer.json()
                if answer.status_code == 201 or body.get("call_placed"):
                    approved = checker.post(
                        "/verify", json={"id": body["id"], "code": heard_code(sandbox, phone)}
                    )
                    assert approved.json()["valid"] is True, (phone, answer.text, approved.text)
                else:
                    assert assert_problem(answer, 503, "storage_unavailable")["call_placed"] is False
                    if sandbox.calls(phone):
                        raise AssertionError(
                            f"{phone} was called, but the client was told nothing was placed"
                        )


def test_an_evicting_redis_is_warned_about_at_start(server: ServerProcess, sandbox: SandboxHandle) -> None:
    """A Redis that may evict keys (and so forget budgets and verifications) is named in a warning."""
    with server.client() as redis:
        redis.config_set("maxmemory-policy", "allkeys-lru")
    with running_service(server.url, sandbox.url) as service:
        wait_until(lambda: "storage.evicting_policy" in service.logs.getvalue(), 5, "the eviction warning")
    assert "allkeys-lru" in service.logs.getvalue()
