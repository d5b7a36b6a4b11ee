"""A start or resend costs about its provider call: the code is hashed and stored while the call is placed.

These tests hold the service's code hashing at a gate (the real argon2 hash still runs, only later) to
prove the order of things without timing them: the call goes out while the code is still being
hashed, the placement is recorded (and the client answered) only once the code is stored, and every
way out (a refused budget, a call that never left, an unknown outcome, storage failing, hashing
failing) leaves the truth behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from otpservice.adapters.storage import keys
from otpservice.domain.limits import Limit
from otpservice.domain.phone import parse_phone
from otpservice.tenants import Tenant, hash_api_key
from tests.support.flows import InBackground, assert_problem, create, heard_code
from tests.support.invariants import stranded_after_settling
from tests.support.provider import RecordedRequests
from tests.support.redis_servers import ServerProcess, standalone_server, sync_client, wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import CountingHasher, ServiceHandle, running_service

# Each storage try gets 0.25 s (as in test_storage_faults): a stalled store fails within 1.75 s.
FAST_STORAGE: dict[str, Any] = {"redis_timeout_seconds": 0.25}


class HashGate:
    """Holds every code hash of a running service (never its checks) until opened, counting them.

    It wraps the test's own hasher seam: the real argon2 hash runs once the gate opens. ``fail``
    makes the next hashes raise instead, as a broken argon2 would.
    """

    def __init__(self, hasher: CountingHasher):
        self.entered = 0
        self.finished = 0
        self.fail = False
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        real = hasher.hash

        def gated(verification_id: str, code: str) -> str:
            with self._lock:
                self.entered += 1
            try:
                if not self._open.wait(timeout=30):
                    raise TimeoutError("the hash gate was never opened")
                if self.fail:
                    raise RuntimeError("argon2 failed")
                return real(verification_id, code)
            finally:
                with self._lock:
                    self.finished += 1

        hasher.hash = gated  # type: ignore[method-assign]

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()


@pytest.fixture
def recorded() -> RecordedRequests:
    return RecordedRequests()


@pytest.fixture
def gated(redis_url: str, sandbox: SandboxHandle, recorded: RecordedRequests) -> Iterator[ServiceHandle]:
    """The service, every call it places recorded (to learn a verification's id before its answer).

    The sandbox sends no callbacks: each test here says when one comes.
    """
    sandbox.config.callback_faults.drop = True
    with running_service(redis_url, sandbox.url, provider_transport=recorded) as service:
        yield service


def _record(redis_url: str, vid: str) -> dict[str, str]:
    """A verification's stored fields, read straight from Redis."""
    redis = sync_client(redis_url)
    try:
        raw = redis.hgetall(keys.verification_key(vid))
    finally:
        redis.close()
    return {k.decode(): v.decode() for k, v in raw.items()}


def _records_of(redis_url: str, national: str) -> list[str]:
    """Ids of every stored verification of a number."""
    e164 = parse_phone(national, ("VN",)).e164
    redis = sync_client(redis_url)
    try:
        found = []
        for key in redis.scan_iter(match="otp:{s*}:vf_*", count=1000):
            if redis.hget(key, "ph") == e164.encode():
                found.append(key.decode().rsplit(":", 1)[1])
        return found
    finally:
        redis.close()


def test_a_start_places_its_call_while_its_code_is_still_being_hashed(
    gated: ServiceHandle, sandbox: SandboxHandle, recorded: RecordedRequests, redis_url: str
) -> None:
    """The call leaves while the code's hash is held; the start answers, "calling", once it is stored."""
    gate = HashGate(gated.hasher)
    gate.close()
    starting = InBackground(gated, lambda client: client.post("/otp", json={"phone": "0912100001"}))
    wait_until(lambda: bool(sandbox.calls("0912100001")), 5, "the call leaving while its code is hashed")
    vid = recorded.called_id()
    with gated.client() as client:
        held = client.get(f"/otp/{vid}").json()
        assert not starting.answered
        stored = _record(redis_url, vid)
        gate.open()
        answer = starting.answer()
        approved = client.post("/verify", json={"id": vid, "code": heard_code(sandbox, "0912100001")})
    assert held["delivery"]["status"] == "queued"  # the placement waits for the code
    assert not {"nc", "hc"} & set(stored)
    assert answer.status_code == 201, answer.text
    assert (answer.json()["id"], answer.json()["delivery"]["status"]) == (vid, "calling")
    assert approved.json()["valid"] is True


def _storage_operations(name: str) -> float:
    """How many times this process ran the storage operation ``name`` (otp_storage_operations)."""
    return REGISTRY.get_sample_value("otp_storage_operations_total", {"operation": name}) or 0.0


def test_a_code_hashed_after_its_call_was_placed_is_stored_with_the_placement_in_one_round_trip(
    gated: ServiceHandle, sandbox: SandboxHandle, recorded: RecordedRequests, redis_url: str
) -> None:
    """When the provider answers before the hash is ready, one script stores the code and the
    placement: no write of the code of its own, and the code approves."""
    gate = HashGate(gated.hasher)
    gate.close()
    before = {name: _storage_operations(name) for name in ("store_code", "placed")}
    starting = InBackground(gated, lambda client: client.post("/otp", json={"phone": "0912100013"}))
    wait_until(lambda: recorded.answered == 1, 5, "the provider's answer reaching the service first")
    gate.open()
    answer = starting.answer()
    ran = {name: _storage_operations(name) - count for name, count in before.items()}
    stored = _record(redis_url, recorded.called_id())
    with gated.client() as client:
        approved = client.post(
            "/verify", json={"id": answer.json()["id"], "code": heard_code(sandbox, "0912100013")}
        )
    assert answer.status_code == 201, answer.text
    assert ran == {"store_code": 0, "placed": 1}
    assert {"hc", "hp"} <= set(stored)
    assert "nc" not in stored
    assert approved.json()["valid"] is True


def test_a_resend_places_its_call_while_its_new_code_is_still_being_hashed(
    gated: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """A resend's call leaves while its new code is hashed; the new code approves right after the answer."""
    gate = HashGate(gated.hasher)
    with gated.client() as client:
        first = create(client, "0912100002")
        vid = first["id"]
        gated.clock.advance(30)
        gate.close()
        resending = InBackground(gated, lambda own: own.post(f"/otp/{vid}/resend"))
        wait_until(lambda: len(sandbox.calls("0912100002")) == 2, 5, "the resend's call leaving")
        held = client.get(f"/otp/{vid}").json()
        assert not resending.answered
        gate.open()
        answer = resending.answer()
        approved = client.post("/verify", json={"id": vid, "code": heard_code(sandbox, "0912100002")})
    assert (held["sends"], held["delivery"]["call_id"]) == (1, first["delivery"]["call_id"])
    assert answer.status_code == 200, answer.text
    assert (answer.json()["sends"], answer.json()["delivery"]["status"]) == (2, "calling")
    assert approved.json()["valid"] is True


def test_a_callback_before_the_code_is_stored_spends_no_attempt_and_the_code_still_approves(
    redis_url: str, sandbox: SandboxHandle, recorded: RecordedRequests
) -> None:
    """A callback may prove the call placed before its code is stored; a check meanwhile spends nothing."""
    with running_service(redis_url, sandbox.url, provider_transport=recorded) as service:
        gate = HashGate(service.hasher)
        gate.close()
        starting = InBackground(service, lambda own: own.post("/otp", json={"phone": "0912100012"}))
        wait_until(lambda: bool(sandbox.calls("0912100012")), 5, "the call leaving")
        vid = recorded.called_id()
        code = heard_code(sandbox, "0912100012")
        with service.client() as client:
            wait_until(
                lambda: client.get(f"/otp/{vid}").json()["delivery"]["status"] == "answered",
                5,
                "the callback being recorded",
            )
            early = client.post("/verify", json={"id": vid, "code": code})
            assert not starting.answered
            gate.open()
            answer = starting.answer()
            approved = client.post("/verify", json={"id": vid, "code": code}).json()
    pending = assert_problem(early, 503, "check_not_recorded")
    assert "request a new call" in pending["detail"]  # the way out should the code's write be lost
    assert answer.status_code == 201, answer.text
    assert (approved["valid"], approved["attempts"]) == (True, 1)


def test_a_resend_heard_before_its_code_was_stored_still_approves_after_the_next_resend_failed(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A resend whose callback came before its code was stored keeps that code when a newer resend
    begins (and never leaves) before the code lands: the code heard approves."""
    phone = "0912100013"
    with running_service(redis_url, sandbox.url) as service, service.client() as client:
        gate = HashGate(service.hasher)
        vid = create(client, phone)["id"]
        service.clock.advance(31)
        gate.close()
        resending = InBackground(service, lambda own: own.post(f"/otp/{vid}/resend"))
        wait_until(
            lambda: _record(redis_url, vid).get("ds") == "2" and "ns" not in _record(redis_url, vid),
            5,
            "the resend's callback making it the current send before its code is stored",
        )
        heard = heard_code(sandbox, phone)
        service.clock.advance(31)
        sandbox.config.provider_faults.error_status = 400
        sandbox.config.provider_faults.error_rate = 1.0
        refused = client.post(f"/otp/{vid}/resend")
        gate.open()
        answer = resending.answer()
        check = client.post("/verify", json={"id": vid, "code": heard}).json()
    assert refused.status_code >= 400
    assert answer.status_code == 200, answer.text
    assert (check["valid"], check["attempts"]) == (True, 1)


def test_a_refused_start_hashes_nothing_and_stores_nothing(redis_url: str, sandbox: SandboxHandle) -> None:
    """A start a budget refuses costs no hash and leaves no record and no call."""
    with running_service(redis_url, sandbox.url, client_ip_limits=(Limit(1, 3_600_000),)) as service:
        gate = HashGate(service.hasher)
        with service.client() as client:
            create(client, "0912100003", client_ip="192.0.2.7")
            hashed = gate.entered
            refused = client.post("/otp", json={"phone": "0912100004", "client_ip": "192.0.2.7"})
    assert_problem(refused, 429, "client_rate_limited")
    assert gate.entered == hashed
    assert sandbox.calls("0912100004") == []
    assert _records_of(redis_url, "0912100004") == []


def test_a_start_answered_with_the_pending_verification_does_not_wait_for_a_hash(
    gated: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """A second start for a pending number answers at once, whatever becomes of a code it never needs."""
    gate = HashGate(gated.hasher)
    with gated.client() as client:
        vid = create(client, "0912100005")["id"]
        gate.close()
        try:
            again = client.post("/otp", json={"phone": "0912100005"})
        finally:
            gate.open()
    assert again.status_code == 200, again.text
    assert again.json()["id"] == vid
    assert len(sandbox.calls("0912100005")) == 1


def test_a_call_that_never_left_keeps_no_code_even_when_its_hash_comes_later(
    sandbox: SandboxHandle, redis_url: str
) -> None:
    """When the provider surely got nothing, the answer does not wait for the hash, and no code is stored."""
    # Failing since before the service started, the provider gave it no token: the refused token
    # request means the call never left (a token cached at start would make it the call's own 503).
    sandbox.config.callback_faults.drop = True
    sandbox.config.provider_faults.error_rate = 1.0
    with running_service(redis_url, sandbox.url) as service, service.client() as client:
        gate = HashGate(service.hasher)
        gate.close()
        try:
            refused = client.post("/otp", json={"phone": "0912100007"})
        finally:
            gate.open()
        body = assert_problem(refused, 503, "provider_unavailable")
        wait_until(lambda: gate.finished == gate.entered, 10, "the held hash finishing")
        failed = client.get(f"/otp/{body['id']}").json()
    stored = _record(redis_url, body["id"])
    assert body["call_may_have_rung"] is False
    assert failed["status"] == "failed"
    assert not {"nc", "hc", "ns"} & set(stored)


def test_an_unknown_outcome_waits_for_its_code_to_be_stored(redis_url: str, sandbox: SandboxHandle) -> None:
    """When nobody knows whether the call rang, the answer waits until its code is stored, which approves."""
    sandbox.config.callback_faults.drop = True
    with running_service(redis_url, sandbox.url) as service, service.client() as client:
        gate = HashGate(service.hasher)
        create(client, "0912100008")  # the token is fetched lazily: fetch it now
        sandbox.config.provider_faults.lose_answer = True
        gate.close()
        starting = InBackground(service, lambda own: own.post("/otp", json={"phone": "0912100009"}))
        wait_until(lambda: bool(sandbox.calls("0912100009")), 5, "the call leaving")
        time.sleep(1.0)  # the provider's answer is given up on after 0.75 s
        waited = not starting.answered
        gate.open()
        body = assert_problem(starting.answer(), 503, "provider_unavailable")
        sandbox.config.provider_faults.lose_answer = False
        approved = client.post("/verify", json={"id": body["id"], "code": heard_code(sandbox, "0912100009")})
    assert waited
    assert body["call_may_have_rung"] is True
    assert (approved.json()["valid"], approved.json()["delivery"]["status"]) == (True, "unknown")


def test_a_failed_hash_fails_the_verification_instead_of_leaving_it_uncheckable(
    gated: ServiceHandle, recorded: RecordedRequests, redis_url: str
) -> None:
    """Should hashing raise, the start answers 503 code_lost with the id (the call may ring), the
    verification is failed, never pending, and the call still counts against the number."""
    gate = HashGate(gated.hasher)
    gate.fail = True
    with gated.client() as client:
        broken = client.post("/otp", json={"phone": "0912100010"})
        vid = recorded.called_id()
        verification = client.get(f"/otp/{vid}").json()
    body = assert_problem(broken, 503, "code_lost")
    assert (body["id"], body["call_may_have_rung"]) == (vid, True)
    assert verification["status"] == "failed"
    redis = sync_client(redis_url)
    try:
        shard = keys.verification_key(vid).rsplit(":", 1)[0]
        assert redis.zcard(f"{shard}:n:{verification['phone']}:calls") == 1
    finally:
        redis.close()


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    """A server of the test's own, to stall."""
    with standalone_server() as process:
        yield process


def test_storage_failing_while_the_code_is_stored_is_repaired_before_the_placement(
    server: ServerProcess, sandbox: SandboxHandle
) -> None:
    """Storage stalls while a placed call's code is stored: 503 call_placed, the id, and later it approves."""
    with running_service(server.url, sandbox.url, **FAST_STORAGE) as service:
        gate = HashGate(service.hasher)
        gate.close()
        starting = InBackground(service, lambda own: own.post("/otp", json={"phone": "0912100011"}))
        wait_until(lambda: bool(sandbox.calls("0912100011")), 5, "the call leaving")
        server.pause()
        try:
            gate.open()
            answer = starting.answer()
        finally:
            server.resume()
        body = assert_problem(answer, 503, "storage_unavailable")
        with service.client() as client:
            wait_until(
                lambda: client.get(f"/otp/{body['id']}").json()["delivery"]["call_id"] is not None,
                10,
                "the code and then the placement being written by the repair queue",
                interval=0.05,
            )
            check = {"id": body["id"], "code": heard_code(sandbox, "0912100011")}
            # the connections a stall broke may still be coming back: a 503 there spends no attempt
            deadline = time.monotonic() + 5
            while (approved := client.post("/verify", json=check)).status_code == 503:
                assert time.monotonic() < deadline, approved.text
                time.sleep(0.05)
        assert stranded_after_settling(server.url, service) == []
    assert (body["call_placed"], approved.json()["valid"]) == (True, True), approved.text


def test_a_start_with_the_chosen_code_while_that_code_is_being_stored_is_not_judged(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A repeated start carrying the chosen code cannot be checked before the code is stored: 503
    check_not_recorded, nothing spent; once it is stored the same start answers the verification."""
    key = "fallback-key-0123456789"
    tenants = (Tenant("fallback", (hash_api_key(key),), allow_custom_code=True),)
    sandbox.config.callback_faults.drop = True
    with running_service(redis_url, sandbox.url, tenants=tenants) as service, service.client(key) as client:
        gate = HashGate(service.hasher)
        gate.close()

        def start(own: httpx.Client) -> httpx.Response:
            own.headers["Authorization"] = f"Bearer {key}"
            return own.post("/otp", json={"phone": "0912100013", "code": "90817263"})

        first = InBackground(service, start)
        wait_until(lambda: bool(sandbox.calls("0912100013")), 5, "the call leaving")
        early = client.post("/otp", json={"phone": "0912100013", "code": "90817263"})
        gate.open()
        created = first.answer()
        again = client.post("/otp", json={"phone": "0912100013", "code": "90817263"})
    assert_problem(early, 503, "check_not_recorded")
    assert created.status_code == 201, created.text
    assert again.status_code == 200, again.text
    assert (again.json()["id"], again.json()["attempts"]) == (created.json()["id"], 0)
