"""When the provider fails: 503 provider_unavailable, saying whether the call may have rung.

A call that surely never left fails the verification (first call) and costs nothing; one that may
have rung leaves the verification pending with its code accepted, delivery "unknown".
"""

from __future__ import annotations

import asyncio
import time

import httpx

from otpservice.domain.limits import Limit
from otpservice.sandbox.config import EXAMPLE_SECRET_KEY
from otpservice.settings import AutocallSettings
from tests.support.flows import assert_problem, create, heard_code
from tests.support.provider import SlowAnswers
from tests.support.sandbox import SandboxHandle
from tests.support.servers import refused_port
from tests.support.service import ScriptedCodes, ServiceHandle, running_service


def _unavailable_then_failed(service: ServiceHandle) -> None:
    with service.client() as client:
        response = client.post("/otp", json={"phone": "0987654321"})
        body = assert_problem(response, 503, "provider_unavailable")
        assert int(response.headers["retry-after"]) > 0
        assert body["call_may_have_rung"] is False
        verification = client.get(f"/otp/{body['id']}").json()
    assert verification["status"] == "failed"
    assert verification["delivery"]["status"] == "failed"


def _unavailable_and_unconfirmed(service: ServiceHandle, phone: str = "0987654321") -> dict[str, object]:
    """503 provider_unavailable saying the call may have rung; the verification waits, delivery unknown."""
    with service.client() as client:
        response = client.post("/otp", json={"phone": phone})
        body = assert_problem(response, 503, "provider_unavailable")
        assert int(response.headers["retry-after"]) > 0
        assert body["call_may_have_rung"] is True
        verification: dict[str, object] = client.get(f"/otp/{body['id']}").json()
    assert verification["status"] == "pending"
    assert verification["delivery"]["status"] == "unknown"  # type: ignore[index]
    assert verification["delivery"]["reason"]  # type: ignore[index]
    return verification


def test_provider_errors_are_503_and_leave_nothing_pending(redis_url: str, sandbox: SandboxHandle) -> None:
    """A provider answering 503 before the call is sent (to the token request: it failed since the
    service started, so no token is cached) gets 503 provider_unavailable, and the verification is
    failed, not pending."""
    sandbox.config.provider_faults.error_rate = 1.0
    with running_service(redis_url, sandbox.url) as service:
        _unavailable_then_failed(service)


def test_provider_500_is_503(redis_url: str, sandbox: SandboxHandle) -> None:
    """A provider answering 500 is reported the same way."""
    sandbox.config.provider_faults.error_rate = 1.0
    sandbox.config.provider_faults.error_status = 500
    with running_service(redis_url, sandbox.url) as service:
        _unavailable_then_failed(service)


def test_provider_timeout_is_503_and_may_have_rung(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """A call request that times out after it was sent is 503, and the verification waits (it may ring)."""
    with service.client() as client:
        create(client, "0912345678")  # the token is fetched lazily: fetch it now, so only the call hangs
    sandbox.config.provider_faults.hang = True
    _unavailable_and_unconfirmed(service)


def _quick_provider(sandbox: SandboxHandle) -> AutocallSettings:
    """The sandbox with short timeouts: one exchange is bounded by 2 x 0.2 s connect + 0.3 s read."""
    return AutocallSettings(
        url=sandbox.url,
        secret_key=EXAMPLE_SECRET_KEY,
        caller="0123456789",
        connect_timeout_seconds=0.2,
        read_timeout_seconds=0.3,
    )


def test_an_answer_slower_than_the_placement_bound_is_503_and_may_have_rung(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A provider answer arriving later than a placement's whole bound (each read inside its timeout,
    as a trickle passes) ends the placement at the bound: 503 may have rung, the verification waits."""
    slow = SlowAnswers(delay=0)
    sandbox.config.callback_faults.drop = True  # the call ends at once: its callback would settle it
    quick = _quick_provider(sandbox)
    with running_service(redis_url, sandbox.url, provider_transport=slow, autocall=quick) as service:
        with service.client() as client:
            create(client, "0912345677")  # the token is fetched lazily: now, so only the call is late
        slow.delay = 30  # well past the bound
        _unavailable_and_unconfirmed(service, "0912345676")


def test_a_token_slower_than_the_bound_is_503_and_surely_placed_nothing(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A token endpoint answering later than one exchange's bound ends the start before any call
    could leave: 503 saying no call was placed, and no call at the provider."""

    async def slow_token(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200, json={"data": {"access_token": "t", "expire_at": 3600}})

    transport = httpx.MockTransport(slow_token)
    quick = _quick_provider(sandbox)
    with running_service(redis_url, sandbox.url, provider_transport=transport, autocall=quick) as service:
        _unavailable_then_failed(service)


def test_a_401_then_a_token_slower_than_the_bound_surely_placed_nothing(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A call refused 401 (placed nothing), then a new token slower than the bound: 503 saying no
    call was placed, not that one may have rung."""
    tokens = 0

    async def provider(request: httpx.Request) -> httpx.Response:
        nonlocal tokens
        if request.url.path.endswith("generate_access_token"):
            tokens += 1
            if tokens > 1:
                await asyncio.sleep(30)  # the refresh after the 401 hangs
            return httpx.Response(200, json={"data": {"access_token": f"t{tokens}", "expire_at": 3600}})
        return httpx.Response(401, json={"message": "token expired"})

    transport = httpx.MockTransport(provider)
    quick = _quick_provider(sandbox)
    with running_service(redis_url, sandbox.url, provider_transport=transport, autocall=quick) as service:
        _unavailable_then_failed(service)


def test_lost_answer_leaves_the_spoken_code_verifiable(redis_url: str, sandbox: SandboxHandle) -> None:
    """The provider placed the call but its answer was lost: the code the phone heard still approves."""
    sandbox.config.callback_faults.drop = True
    with running_service(redis_url, sandbox.url) as service:
        with service.client() as client:
            create(client, "0912345678")
        sandbox.config.provider_faults.lose_answer = True
        verification = _unavailable_and_unconfirmed(service, "0912345679")
        sandbox.config.provider_faults.lose_answer = False
        with service.client() as client:
            code = heard_code(sandbox, "0912345679")
            approved = client.post("/verify", json={"id": verification["id"], "code": code}).json()
    assert (approved["valid"], approved["status"]) == (True, "approved")


def test_unreachable_provider_is_503(redis_url: str) -> None:
    """A provider nobody listens for gets 503 provider_unavailable."""
    with refused_port() as port, running_service(redis_url, f"http://127.0.0.1:{port}") as service:
        _unavailable_then_failed(service)


def test_proxy_html_page_is_503(redis_url: str) -> None:
    """An HTML error page from a proxy in front of the provider is 503 (the call may have rung), not 500."""

    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("generate_access_token"):
            return httpx.Response(200, json={"data": {"access_token": "t", "expire_at": 3600}})
        return httpx.Response(502, text="<html><body>Bad Gateway</body></html>")

    with running_service(
        redis_url, "http://provider.invalid", provider_transport=httpx.MockTransport(provider)
    ) as s:
        _unavailable_and_unconfirmed(s)


def test_resend_during_outage_keeps_old_code(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """A resend the provider cannot place is 503, counts no send, and the old code still works."""
    with service.client() as client:
        vid = create(client)["id"]
        old = heard_code(sandbox, "0987654321")
        service.clock.advance(30)
        sandbox.config.provider_faults.error_rate = 1.0
        refused = client.post(f"/otp/{vid}/resend")
        assert_problem(refused, 503, "provider_unavailable")
        assert int(refused.headers["retry-after"]) > 0
        assert client.get(f"/otp/{vid}").json()["sends"] == 1
        assert client.post("/verify", json={"id": vid, "code": old}).json()["valid"] is True


def test_a_start_calling_the_pending_verification_again_says_it_stays_pending(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """A start that meets the number's pending verification after its cooldown and cannot call it
    again answers 503 with that id, saying it stays pending and its earlier code still works (it is
    not failed, as a new verification whose first call never left would be)."""
    phone = "0987650011"
    with service.client() as client:
        vid = create(client, phone)["id"]
        old = heard_code(sandbox, phone)
        service.clock.advance(30)
        sandbox.config.provider_faults.error_rate = 1.0
        sandbox.config.provider_faults.error_status = 400
        refused = client.post("/otp", json={"phone": phone})
        problem = assert_problem(refused, 503, "provider_unavailable")
        assert (problem["id"], problem["call_may_have_rung"]) == (vid, False)
        assert "the verification stays pending" in problem["detail"]
        assert client.get(f"/otp/{vid}").json()["status"] == "pending"
        assert client.post("/verify", json={"id": vid, "code": old}).json()["valid"] is True


def test_resend_refused_connection_gives_cooldown_back(redis_url: str, sandbox: SandboxHandle) -> None:
    """When the provider surely never got the resend (connection refused), the cooldown is given back."""
    with running_service(redis_url, sandbox.url) as service, service.client() as client:
        vid = create(client)["id"]
        service.clock.advance(30)
        before = client.get(f"/otp/{vid}").json()["resend_available_at"]
        with (
            refused_port() as port,
            running_service(redis_url, f"http://127.0.0.1:{port}", tenants=service.settings.tenants) as down,
            down.client() as other,
        ):
            down.clock.advance(30)
            assert_problem(other.post(f"/otp/{vid}/resend"), 503, "provider_unavailable")
        assert client.get(f"/otp/{vid}").json()["resend_available_at"] == before


def _provider_answering(placement: dict[str, object]) -> httpx.MockTransport:
    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("generate_access_token"):
            return httpx.Response(200, json={"data": {"access_token": "t", "expire_at": 3600}})
        return httpx.Response(200, json={"data": {"campaign_id": "1", "results": placement}})

    return httpx.MockTransport(provider)


def test_opaque_call_id_is_still_tracked(redis_url: str) -> None:
    """A call id that does not end in the national number is still taken as the call's id."""
    transport = _provider_answering({"fail": [], "success": ["1_1_1_5_abc_84987654321"]})
    with (
        running_service(redis_url, "http://provider.invalid", provider_transport=transport) as service,
        service.client() as client,
    ):
        created = create(client)
    assert created["delivery"]["call_id"] == "1_1_1_5_abc_84987654321"
    assert created["status"] == "pending"


def test_placement_both_accepting_and_refusing_the_number_may_have_rung(redis_url: str) -> None:
    """An answer that lists the number as both placed and refused is 503 may have rung, not a refusal."""
    transport = _provider_answering(
        {"fail": [{"0987654321": "Blacklist"}], "success": ["1_1_1_5_abc_0987654321"]}
    )
    with running_service(redis_url, "http://provider.invalid", provider_transport=transport) as service:
        _unavailable_and_unconfirmed(service)


def test_a_provider_refusing_the_request_is_said_to_have_refused_it(redis_url: str) -> None:
    """A 4xx from the provider is answered as a refusal (it was reached), with no call placed."""

    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("generate_access_token"):
            return httpx.Response(200, json={"data": {"access_token": "t", "expire_at": 3600}})
        return httpx.Response(400, json={"message": "bad request"})

    transport = httpx.MockTransport(provider)
    with (
        running_service(redis_url, "http://provider.invalid", provider_transport=transport) as service,
        service.client() as client,
    ):
        body = assert_problem(client.post("/otp", json={"phone": "0987654321"}), 503, "provider_unavailable")
    assert body["call_may_have_rung"] is False
    assert body["detail"].startswith("the voice provider refused the request; no call was placed")


def test_placement_naming_no_call_is_503(redis_url: str) -> None:
    """An answer that neither accepts nor refuses the number is treated like a lost answer: it may ring."""
    transport = _provider_answering({"fail": [], "success": []})
    with running_service(redis_url, "http://provider.invalid", provider_transport=transport) as service:
        _unavailable_and_unconfirmed(service)


def test_unconfirmed_resend_accepts_old_and_new_code(redis_url: str, sandbox: SandboxHandle) -> None:
    """A resend whose answer was lost keeps both codes verifiable until the placement is settled."""
    sandbox.config.callback_faults.drop = True
    for approving in ("111111", "222222"):
        codes = ScriptedCodes("111111", "222222")
        with running_service(redis_url, sandbox.url, randbelow=codes) as service, service.client() as client:
            vid = create(client)["id"]
            service.clock.advance(30)
            sandbox.config.provider_faults.lose_answer = True
            lost = client.post(f"/otp/{vid}/resend")
            sandbox.config.provider_faults.lose_answer = False
            assert assert_problem(lost, 503, "provider_unavailable")["call_may_have_rung"] is True
            assert heard_code(sandbox, "0987654321") == "222222"
            approved = client.post("/verify", json={"id": vid, "code": approving}).json()
        assert (approved["valid"], approved["delivery"]["status"]) == (True, "unknown"), approving


def test_callback_settles_an_unconfirmed_resend(redis_url: str, sandbox: SandboxHandle) -> None:
    """Once the provider reports the lost call, only its code is accepted."""
    codes = ScriptedCodes("111111", "222222")
    sandbox.config.callback_faults.reorder = True  # hold callbacks until flushed
    with running_service(redis_url, sandbox.url, randbelow=codes) as service, service.client() as client:
        vid = create(client)["id"]
        service.clock.advance(30)
        sandbox.config.provider_faults.lose_answer = True
        assert_problem(client.post(f"/otp/{vid}/resend"), 503, "provider_unavailable")
        sandbox.config.provider_faults.lose_answer = False
        httpx.post(f"{sandbox.url}/_sandbox/callbacks/flush").raise_for_status()
        deadline = time.monotonic() + 5
        while client.get(f"/otp/{vid}").json()["sends"] != 2:
            assert time.monotonic() < deadline, "the callback of the lost call never settled it"
            time.sleep(0.02)
        old = client.post("/verify", json={"id": vid, "code": "111111"}).json()
        new = client.post("/verify", json={"id": vid, "code": "222222"}).json()
    assert (old["valid"], new["valid"]) == (False, True)


def test_calls_that_never_left_cost_no_budget(redis_url: str, sandbox: SandboxHandle) -> None:
    """Refused connections and refused numbers give their slot of the number's budget back."""
    one_call = (Limit(1, 3_600_000),)
    with (
        refused_port() as port,
        running_service(redis_url, f"http://127.0.0.1:{port}", phone_limits=one_call) as down,
        down.client() as client,
    ):
        for _ in range(3):
            body = assert_problem(
                client.post("/otp", json={"phone": "0912000333"}), 503, "provider_unavailable"
            )
            assert body["call_may_have_rung"] is False
    with (
        running_service(redis_url, sandbox.url, phone_limits=one_call) as service,
        service.client() as client,
    ):
        for _ in range(3):
            assert_problem(client.post("/otp", json={"phone": "0900000008"}), 422, "provider_rejected")
        first = create(client, "0912000333")
        client.delete(f"/otp/{first['id']}")
        assert_problem(client.post("/otp", json={"phone": "0912000333"}), 429, "phone_rate_limited")
