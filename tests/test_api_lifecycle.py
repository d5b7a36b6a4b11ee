"""Expiry, resend and cancel: the verification state machine over HTTP."""

from __future__ import annotations

import threading

import httpx

from tests.support.flows import assert_problem, create, heard_code, wrong_code
from tests.support.provider import SlowAnswers
from tests.support.redis_servers import wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import ScriptedCodes, ServiceHandle, running_service


def test_expired_verification_answers_expired_then_404(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """Past its TTL a verification is expired (409 on use); past its retention it is gone (404)."""
    with service.client() as client:
        verification = create(client, ttl_seconds=60)
        vid = verification["id"]
        code = heard_code(sandbox, "0987654321")
        service.clock.advance(61)
        assert client.get(f"/otp/{vid}").json()["status"] == "expired"
        assert_problem(client.post("/verify", json={"id": vid, "code": code}), 409, "expired")
        assert_problem(client.post(f"/otp/{vid}/resend"), 409, "expired")
        assert_problem(client.delete(f"/otp/{vid}"), 409, "expired")
        service.clock.advance(service.settings.retention_seconds)
        assert_problem(client.get(f"/otp/{vid}"), 404, "not_found")


def test_resend_too_soon_is_429_with_retry_after(service: ServiceHandle) -> None:
    """A resend within the cooldown answers 429 resend_too_soon with Retry-After and places no call."""
    with service.client() as client:
        verification = create(client)
        service.clock.advance(10)
        response = client.post(f"/otp/{verification['id']}/resend")
    body = assert_problem(response, 429, "resend_too_soon")
    assert response.headers["retry-after"] == "20"
    assert body["resend_available_at"].endswith("Z")
    assert body["detail"].endswith(body["resend_available_at"])  # the same time, written the same way


def test_resend_places_a_new_code_and_retires_the_old(redis_url: str, sandbox: SandboxHandle) -> None:
    """After the cooldown a resend calls with a new code; the old one stops working; attempts stay used."""
    codes = ScriptedCodes("111111", "222222")
    with running_service(redis_url, sandbox.url, randbelow=codes) as service, service.client() as client:
        vid = create(client)["id"]
        assert heard_code(sandbox, "0987654321") == "111111"
        client.post("/verify", json={"id": vid, "code": "999999"})
        service.clock.advance(30)
        resent = client.post(f"/otp/{vid}/resend")
        assert resent.status_code == 200, resent.text
        assert heard_code(sandbox, "0987654321") == "222222"
        assert len(sandbox.calls("0987654321")) == 2
        assert (resent.json()["sends"], resent.json()["attempts"]) == (2, 1)
        stale = client.post("/verify", json={"id": vid, "code": "111111"}).json()
        assert (stale["valid"], stale["attempts"]) == (False, 2)
        approved = client.post("/verify", json={"id": vid, "code": "222222"}).json()
    assert approved["valid"] is True
    assert approved["status"] == "approved"


def test_resend_budget_is_limited(service: ServiceHandle) -> None:
    """A verification places at most OTP_MAX_SENDS calls, then answers 429 max_sends_reached."""
    with service.client() as client:
        vid = create(client)["id"]
        for _ in range(service.settings.max_sends - 1):
            service.clock.advance(30)
            assert client.post(f"/otp/{vid}/resend").status_code == 200
        service.clock.advance(30)
        assert_problem(client.post(f"/otp/{vid}/resend"), 429, "max_sends_reached")


def test_cancel_ends_the_verification(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """DELETE cancels; the code no longer works; cancelling again is 409 canceled."""
    with service.client() as client:
        verification = create(client)
        vid = verification["id"]
        canceled = client.delete(f"/otp/{vid}")
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled"
        code = heard_code(sandbox, "0987654321")
        assert_problem(client.post("/verify", json={"id": vid, "code": code}), 409, "canceled")
        assert_problem(client.delete(f"/otp/{vid}"), 409, "canceled")
        assert_problem(client.post(f"/otp/{vid}/resend"), 409, "canceled")


def test_approved_verification_cannot_be_resent_or_canceled(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """An approved verification answers 409 approved to resend and cancel."""
    with service.client() as client:
        vid = create(client)["id"]
        client.post("/verify", json={"id": vid, "code": heard_code(sandbox, "0987654321")})
        service.clock.advance(30)
        assert_problem(client.post(f"/otp/{vid}/resend"), 409, "approved")
        assert_problem(client.delete(f"/otp/{vid}"), 409, "approved")


def test_resend_after_every_attempt_is_spent_is_409_and_places_no_call(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """Once the wrong codes used every attempt, a resend answers 409 max_attempts_reached and calls nobody."""
    with service.client() as client:
        vid = create(client, "0912000444")["id"]
        wrong = wrong_code(heard_code(sandbox, "0912000444"))
        for _ in range(service.settings.max_attempts):
            client.post("/verify", json={"id": vid, "code": wrong})
        service.clock.advance(30)
        assert_problem(client.post(f"/otp/{vid}/resend"), 409, "max_attempts_reached")
    assert len(sandbox.calls("0912000444")) == 1


def test_a_call_placed_after_a_cancel_says_so(redis_url: str, sandbox: SandboxHandle) -> None:
    """A resend whose call is placed while the verification is canceled answers canceled, and counts so."""
    slow = SlowAnswers(0.0)
    with (
        running_service(redis_url, sandbox.url, provider_transport=slow) as service,
        service.client() as client,
    ):
        vid = create(client, "0912000555")["id"]
        service.clock.advance(30)
        slow.delay = 0.5
        resending: list[httpx.Response] = []

        def resend() -> None:
            with service.client() as own:
                resending.append(own.post(f"/otp/{vid}/resend"))

        worker = threading.Thread(target=resend)
        worker.start()
        wait_until(lambda: len(sandbox.calls("0912000555")) == 2, 5, "the resend's call being placed")
        assert client.delete(f"/otp/{vid}").status_code == 200
        worker.join(timeout=10)
        metrics = client.get("/metrics").text
    answer = resending[0]
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "canceled"
    assert answer.json()["delivery"]["call_id"] == sandbox.calls("0912000555")[-1]["call_id"]
    assert 'otp_calls_total{outcome="canceled"}' in metrics
