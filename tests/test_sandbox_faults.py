"""Provider faults on demand: latency, injected errors, hung requests and token expiry."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from otpservice.sandbox.config import EXAMPLE_SECRET_KEY, EXAMPLE_TOKEN
from tests.support.sandbox import SandboxHandle, running_sandbox

AUTH = {"Authorization": EXAMPLE_TOKEN}
REPORT = "/api/v2/report/1_1_1_5_cb76e372-b798-4a88-9c8a-410740f0300d_0987654321"
TOKEN = "/api/v1/users/generate_access_token"


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox() as handle:
        yield handle


@pytest.fixture
def sandbox(shared_sandbox: SandboxHandle) -> SandboxHandle:
    """The module's sandbox with every fault off and the seed restored."""
    httpx.post(f"{shared_sandbox.url}/_sandbox/reset").raise_for_status()
    return shared_sandbox


@pytest.fixture
def client(sandbox: SandboxHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=5) as http:
        yield http


def test_latency_delays_provider_answers_only(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """Added latency slows the provider endpoints but not the /_sandbox/ admin endpoints."""
    sandbox.config.provider_faults.latency_seconds = 0.3
    started = time.monotonic()
    assert client.get(REPORT, headers=AUTH).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert client.get("/_sandbox/config").status_code == 200
    assert time.monotonic() - started < 0.3


def test_error_rate_one_fails_every_provider_request(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """With error_rate 1.0 every provider endpoint answers 503 in the error envelope; admin still works."""
    sandbox.config.provider_faults.error_rate = 1.0
    for response in (
        client.post(TOKEN, json={"secret_key": EXAMPLE_SECRET_KEY}),
        client.post("/api/v2/campaigns/1/otp", json={}, headers=AUTH),
        client.get(REPORT, headers=AUTH),
    ):
        assert response.status_code == 503
        body = response.json()
        assert (body["messsage"], body["code"], body["status"]) == ("Service Unavailable", 503, False)
    assert client.get("/_sandbox/calls").status_code == 200


def test_error_status_is_configurable_through_the_admin_endpoint(client: httpx.Client) -> None:
    """PATCH /_sandbox/config can make injected errors 500 Internal Server Error."""
    patch = {"provider_faults": {"error_rate": 1.0, "error_status": 500}}
    assert client.patch("/_sandbox/config", json=patch).status_code == 200
    response = client.get(REPORT, headers=AUTH)
    assert response.status_code == 500
    assert response.json()["messsage"] == "Internal Server Error"


def test_errors_fault_is_injected_before_auth(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """An outage answers its error even to a request with no token, as a down provider would."""
    sandbox.config.provider_faults.error_rate = 1.0
    assert client.get(REPORT).status_code == 503


def test_hang_holds_requests_until_the_client_gives_up(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """With hang on a provider request never answers (the client times out); admin answers; off restores."""
    sandbox.config.provider_faults.hang = True
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.get(REPORT, headers=AUTH, timeout=0.3)
    assert time.monotonic() - started < 2
    assert client.get("/_sandbox/config").json()["provider_faults"]["hang"] is True
    client.patch("/_sandbox/config", json={"provider_faults": {"hang": False}}).raise_for_status()
    assert client.get(REPORT, headers=AUTH).status_code == 200


def test_turning_hang_off_releases_held_requests(sandbox: SandboxHandle) -> None:
    """A request held by the hang fault is answered (503) as soon as the fault is turned off."""
    sandbox.config.provider_faults.hang = True
    with httpx.Client(base_url=sandbox.url, timeout=5) as client:
        started = time.monotonic()
        time_to_release = 0.3

        def release() -> None:
            time.sleep(time_to_release)
            sandbox.config.provider_faults.hang = False

        releaser = threading.Thread(target=release)
        releaser.start()
        response = client.get(REPORT, headers=AUTH)
        releaser.join()
    assert response.status_code == 503
    assert time_to_release <= time.monotonic() - started < 2


def test_expiring_tokens_now_forces_a_refresh(client: httpx.Client) -> None:
    """POST /_sandbox/tokens/expire makes every token answer 401 until a new one is fetched."""
    issued = client.post(TOKEN, json={"secret_key": EXAMPLE_SECRET_KEY}).json()["data"]["access_token"]
    expired = client.post("/_sandbox/tokens/expire")
    assert expired.status_code == 200
    assert expired.json()["expired"] >= 2
    for token in (EXAMPLE_TOKEN, issued):
        response = client.get(REPORT, headers={"Authorization": token})
        assert (response.status_code, response.json()["data"]["error"]) == (
            401,
            "invalid or expired access token",
        )
    fresh = client.post(TOKEN, json={"secret_key": EXAMPLE_SECRET_KEY}).json()["data"]["access_token"]
    assert client.get(REPORT, headers={"Authorization": fresh}).status_code == 200


def test_token_lifetime_can_be_shortened_at_run_time(client: httpx.Client) -> None:
    """A token lifetime patched in at run time applies to tokens issued afterwards."""
    client.patch("/_sandbox/config", json={"token_lifetime_seconds": 0.2}).raise_for_status()
    try:
        data = client.post(TOKEN, json={"secret_key": EXAMPLE_SECRET_KEY}).json()["data"]
        assert data["expire_at"] == 0
        time.sleep(0.3)
        assert client.get(REPORT, headers={"Authorization": data["access_token"]}).status_code == 401
    finally:
        client.patch("/_sandbox/config", json={"token_lifetime_seconds": 15552000}).raise_for_status()


def test_lose_answer_places_the_call_then_holds_its_answer(
    sandbox: SandboxHandle, client: httpx.Client
) -> None:
    """With lose_answer on, an OTP call rings (it is listed) but its caller times out without its id."""
    sandbox.config.provider_faults.lose_answer = True
    body = {
        "caller": "0123456789",
        "callees": ["0987654321"],
        "params": {"template_name": "template_otp_1", "code_otp": "123456"},
    }
    with pytest.raises(httpx.ReadTimeout):
        client.post("/api/v2/campaigns/1/otp", json=body, headers=AUTH, timeout=0.3)
    assert [call["phone"] for call in sandbox.calls()] == ["0987654321"]
