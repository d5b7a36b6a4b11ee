"""Custom codes (SMS fallback): an allowed tenant chooses the code, and the call reads exactly it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from otpservice.tenants import Tenant, hash_api_key
from tests.support.flows import assert_problem, create, heard_code
from tests.support.redis_servers import wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import ServiceHandle, running_service

FALLBACK_KEY = "sms-fallback-" + secrets.token_hex(8)
PLAIN_KEY = "plain-" + secrets.token_hex(8)
CODE = "90817263"


@pytest.fixture
def service(redis_url: str, sandbox: SandboxHandle) -> Iterator[ServiceHandle]:
    tenants = (
        Tenant("fallback", (hash_api_key(FALLBACK_KEY),), allow_custom_code=True),
        Tenant("plain", (hash_api_key(PLAIN_KEY),)),
    )
    with running_service(redis_url, sandbox.url, tenants=tenants) as handle:
        yield handle


def test_the_call_reads_the_chosen_code(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """The call reads the code the tenant sent; /verify accepts it; it is never logged."""
    phone = f"096{secrets.randbelow(10**7):07d}"
    with service.client(FALLBACK_KEY) as client:
        verification = create(client, phone, code=CODE)
        assert verification["code_length"] == len(CODE)
        assert heard_code(sandbox, phone) == CODE
        assert client.post("/verify", json={"id": verification["id"], "code": CODE}).json()["valid"] is True
    assert CODE not in service.logs.getvalue()


def test_a_resend_reads_the_same_code_again(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """A resend must repeat the chosen code, and the new call reads it again."""
    phone = f"096{secrets.randbelow(10**7):07d}"
    with service.client(FALLBACK_KEY) as client:
        vid = create(client, phone, code=CODE)["id"]
        service.clock.advance(30)
        assert_problem(client.post(f"/otp/{vid}/resend"), 422, "custom_code_mismatch")
        assert_problem(
            client.post(f"/otp/{vid}/resend", json={"code": "11112222"}), 422, "custom_code_mismatch"
        )
        resent = client.post(f"/otp/{vid}/resend", json={"code": CODE})
        assert resent.status_code == 200, resent.text
        calls = sandbox.calls(phone)
        assert len(calls) == 2
        assert all(CODE in call["spoken_text"] for call in calls)
        assert client.post("/verify", json={"id": vid, "code": CODE}).json()["valid"] is True


def test_other_tenants_may_not_choose_the_code(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """A tenant without allow_custom_code gets 403 custom_code_not_allowed, and nothing is called."""
    phone = f"096{secrets.randbelow(10**7):07d}"
    with service.client(PLAIN_KEY) as client:
        refused = client.post("/otp", json={"phone": phone, "code": CODE})
        assert_problem(refused, 403, "custom_code_not_allowed")
        vid = create(client, phone)["id"]
        service.clock.advance(30)
        assert_problem(client.post(f"/otp/{vid}/resend", json={"code": CODE}), 403, "custom_code_not_allowed")
    assert len(sandbox.calls(phone)) == 1


def test_a_malformed_chosen_code_is_refused(service: ServiceHandle) -> None:
    """A chosen code must be 4 to 10 digits."""
    with service.client(FALLBACK_KEY) as client:
        for bad in ("123", "12345678901", "12a4"):
            response = client.post("/otp", json={"phone": "0961234567", "code": bad})
            assert_problem(response, 422, "validation_error")


def test_a_start_for_a_pending_number_must_carry_its_code(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """Repeating a start with the pending verification's code answers it; another code is refused."""
    phone = f"096{secrets.randbelow(10**7):07d}"
    with service.client(FALLBACK_KEY) as client:
        first = create(client, phone, code=CODE)
        again = client.post("/otp", json={"phone": phone, "code": CODE})
        assert (again.status_code, again.json()["id"]) == (200, first["id"])
        other = client.post("/otp", json={"phone": phone, "code": "55556666"})
        assert_problem(other, 422, "custom_code_mismatch")
        generated = f"096{secrets.randbelow(10**7):07d}"
        create(client, generated)
        assert_problem(
            client.post("/otp", json={"phone": generated, "code": CODE}), 422, "custom_code_mismatch"
        )
    assert len(sandbox.calls(phone)) == 1


def test_guessing_a_chosen_code_through_resend_spends_attempts(service: ServiceHandle) -> None:
    """A wrong code given to resend counts as a wrong code: guessing there is bounded like /verify."""
    phone = f"096{secrets.randbelow(10**7):07d}"
    with service.client(FALLBACK_KEY) as client:
        vid = create(client, phone, code=CODE)["id"]
        service.clock.advance(30)
        for n in range(service.settings.max_attempts):
            guess = client.post(f"/otp/{vid}/resend", json={"code": f"{n:08d}"})
            assert guess.status_code in (409, 422), guess.text
        assert client.get(f"/otp/{vid}").json()["status"] == "max_attempts_reached"
        assert_problem(client.post(f"/otp/{vid}/resend", json={"code": CODE}), 409, "max_attempts_reached")


def test_a_resend_code_that_is_not_only_digits_spends_no_attempt(service: ServiceHandle) -> None:
    """A resend's code with a trailing newline (which the decoder's pattern lets through) is refused
    as a malformed code, before any attempt is spent."""
    phone = f"096{secrets.randbelow(10**7):07d}"
    with service.client(FALLBACK_KEY) as client:
        vid = create(client, phone, code=CODE)["id"]
        service.clock.advance(30)
        refused = client.post(f"/otp/{vid}/resend", json={"code": CODE[:-1] + "\n"})
        assert_problem(refused, 422, "invalid_code_format")
        assert client.get(f"/otp/{vid}").json()["attempts"] == 0


def test_the_right_chosen_code_resends_even_with_one_attempt_left(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """Checking the chosen code given to a resend reserves an attempt; it is given back before the
    resend begins, so with one attempt left the resend still places its call."""
    tenants = (Tenant("last-attempt", (hash_api_key(FALLBACK_KEY),), allow_custom_code=True, max_attempts=2),)
    phone = f"096{secrets.randbelow(10**7):07d}"
    with (
        running_service(redis_url, sandbox.url, tenants=tenants) as service,
        service.client(FALLBACK_KEY) as client,
    ):
        vid = create(client, phone, code=CODE)["id"]
        assert client.post("/verify", json={"id": vid, "code": "11112222"}).json()["valid"] is False
        service.clock.advance(30)
        resent = client.post(f"/otp/{vid}/resend", json={"code": CODE})
        approved = client.post("/verify", json={"id": vid, "code": CODE}).json()
    assert resent.status_code == 200, resent.text
    assert resent.json()["sends"] == 2
    assert (approved["valid"], approved["attempts"]) == (True, 2)


def test_a_chosen_code_whose_first_call_is_unconfirmed_can_be_resent(redis_url: str) -> None:
    """While the first call's outcome is unknown, the chosen code is still recognised for a resend."""
    placed: list[str] = []

    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("generate_access_token"):
            return httpx.Response(200, json={"data": {"access_token": "t", "expire_at": 3600}})
        placed.append(request.url.path)
        if len(placed) == 1:
            raise httpx.ReadTimeout("the provider took the call but its answer never came", request=request)
        return httpx.Response(
            200, json={"data": {"campaign_id": "1", "results": {"fail": [], "success": ["c2"]}}}
        )

    tenants = (Tenant("fallback", (hash_api_key(FALLBACK_KEY),), allow_custom_code=True),)
    transport = httpx.MockTransport(provider)
    with (
        running_service(
            redis_url, "http://provider.invalid", provider_transport=transport, tenants=tenants
        ) as svc,
        svc.client(FALLBACK_KEY) as client,
    ):
        first = client.post("/otp", json={"phone": "0961112223", "code": CODE})
        body = assert_problem(first, 503, "provider_unavailable")
        assert body["call_may_have_rung"] is True
        svc.clock.advance(30)
        resent = client.post(f"/otp/{body['id']}/resend", json={"code": CODE})
        assert resent.status_code == 200, resent.text
        assert resent.json()["attempts"] == 0


def test_a_repeated_wrong_code_with_one_idempotency_key_spends_one_attempt(service: ServiceHandle) -> None:
    """A wrong chosen code spent an attempt, so its answer is kept: the repeat replays it for free."""
    phone = f"096{secrets.randbelow(10**7):07d}"
    key = {"Idempotency-Key": "resend-" + secrets.token_hex(4)}
    with service.client(FALLBACK_KEY) as client:
        vid = create(client, phone, code=CODE)["id"]
        service.clock.advance(30)
        first = client.post(f"/otp/{vid}/resend", json={"code": "11112222"}, headers=key)
        again = client.post(f"/otp/{vid}/resend", json={"code": "11112222"}, headers=key)
        assert (first.status_code, again.content) == (422, first.content)
        assert client.get(f"/otp/{vid}").json()["attempts"] == 1


def test_a_start_whose_pending_verification_ends_meanwhile_creates_a_new_one(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """A start whose found pending verification is canceled before its call again creates a new one."""
    phone = f"096{secrets.randbelow(10**7):07d}"
    with service.client(FALLBACK_KEY) as client:
        first = create(client, phone, code=CODE)["id"]
        service.clock.advance(30)
        checks = service.hasher.checks
        service.hasher.gate.clear()  # the start holds at its check of the chosen code
        try:
            with ThreadPoolExecutor(1) as pool:
                start = pool.submit(lambda: client.post("/otp", json={"phone": phone, "code": CODE}))
                wait_until(lambda: service.hasher.checks > checks, 10, "the start to check the code")
                assert client.delete(f"/otp/{first}").status_code == 200
                service.hasher.gate.set()
                answer = start.result(timeout=30)
        finally:
            service.hasher.gate.set()
    assert answer.status_code == 201, answer.text
    assert answer.json()["id"] != first
    assert len(sandbox.calls(phone)) == 2
