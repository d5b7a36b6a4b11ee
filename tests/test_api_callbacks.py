"""Provider callbacks: every plausible shape, forged, duplicated, late and out-of-order ones."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from otpservice.domain.callback_auth import CallbackSigner
from tests.support.flows import assert_problem, create
from tests.support.sandbox import SandboxHandle
from tests.support.service import PEPPER, ServiceHandle

SIGNER = CallbackSigner(PEPPER)


def wait_for_final_delivery(client: httpx.Client, vid: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        verification: dict[str, Any] = client.get(f"/otp/{vid}").json()
        if verification["delivery"]["status"] not in ("queued", "calling"):
            return verification
        if time.monotonic() > deadline:
            raise TimeoutError(f"delivery still {verification['delivery']['status']}")
        time.sleep(0.02)


def cdr(call_id: str, status: str = "ANSWERED", duration: int = 12) -> dict[str, Any]:
    return {
        "id": call_id,
        "campaign_id": "1",
        "status": status,
        "duration": duration,
        "phone_number": "0987654321",
    }


@pytest.mark.parametrize(
    ("phone", "delivery"),
    [
        ("0987654321", "answered"),
        ("0900000001", "no_answer"),
        ("0900000002", "busy"),
        ("0900000003", "congestion"),
        ("0900000004", "invalid_number"),
        ("0900000005", "error"),
        ("0900000006", "canceled"),
        ("0900000007", "failed"),
    ],
)
def test_sandbox_outcomes_reach_delivery(service: ServiceHandle, phone: str, delivery: str) -> None:
    """Each magic number's call outcome arrives by callback and lands in delivery.status."""
    with service.client() as client:
        vid = create(client, phone)["id"]
        final = wait_for_final_delivery(client, vid)
    assert final["delivery"]["status"] == delivery
    assert final["delivery"]["provider_status"]
    assert final["status"] == "pending"


@pytest.mark.parametrize("shape", ["cdr", "data", "legacy"])
@pytest.mark.parametrize("apikey_in", ["authorization", "bearer", "x-api-key", "apikey", "body", "none"])
def test_every_callback_shape_is_understood(
    service: ServiceHandle, sandbox: SandboxHandle, shape: str, apikey_in: str
) -> None:
    """The CDR bare, inside data, or in the older shape, with the api key anywhere, records the outcome."""
    sandbox.config.callback_shape = shape  # type: ignore[assignment]
    sandbox.config.callback_apikey_in = apikey_in  # type: ignore[assignment]
    with service.client() as client:
        vid = create(client)["id"]
        final = wait_for_final_delivery(client, vid)
    assert final["delivery"]["status"] == "answered"


@pytest.mark.parametrize("placement", ["authorization", "bearer", "x-api-key", "apikey", "body"])
def test_api_key_is_accepted_wherever_it_arrives(
    service: ServiceHandle, sandbox: SandboxHandle, placement: str
) -> None:
    """Without the credential in the URL, callback_apikey in any header or the body authenticates."""
    sandbox.config.callback_faults.drop = True
    with service.client() as client:
        verification = create(client)
        vid, call_id = verification["id"], verification["delivery"]["call_id"]
        key = SIGNER.credential(vid, 1)
        body = cdr(call_id)
        headers = {
            "authorization": {"Authorization": key},
            "bearer": {"Authorization": f"Bearer {key}"},
            "x-api-key": {"x-api-key": key},
            "apikey": {"apikey": key},
            "body": {},
        }[placement]
        if placement == "body":
            body["callback_apikey"] = key
        response = httpx.post(f"{service.url}/callbacks/autocall/{vid}/1", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["outcome"] == "recorded"
        assert client.get(f"/otp/{vid}").json()["delivery"]["status"] == "answered"


def test_forged_callbacks_change_nothing(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """A callback with no or a wrong credential is 401 and leaves delivery as it was."""
    sandbox.config.callback_faults.drop = True
    with service.client() as client:
        verification = create(client)
        vid, call_id = verification["id"], verification["delivery"]["call_id"]
        base = f"{service.url}/callbacks/autocall/{vid}/1"
        assert_problem(httpx.post(base, json=cdr(call_id)), 401, "invalid_callback_credentials")
        assert_problem(
            httpx.post(f"{base}/{'0' * 64}", json=cdr(call_id)), 401, "invalid_callback_credentials"
        )
        other = SIGNER.credential(vid, 2)  # a real credential, for another call
        assert_problem(httpx.post(f"{base}/{other}", json=cdr(call_id)), 401, "invalid_callback_credentials")
        assert client.get(f"/otp/{vid}").json()["delivery"]["status"] == "calling"


def test_unknown_verification_callback_is_404(service: ServiceHandle) -> None:
    """A correctly signed callback for a verification that does not exist is 404 and stores nothing."""
    vid = "vf_doesnotexist"
    url = f"{service.url}/callbacks/autocall/{vid}/1/{SIGNER.credential(vid, 1)}"
    assert_problem(httpx.post(url, json=cdr("1_1_1_5_x_0987654321")), 404, "not_found")


@pytest.mark.parametrize("send", [0, -5, 1001])
def test_a_callback_for_a_send_out_of_range_is_422(service: ServiceHandle, send: int) -> None:
    """A callback naming a send outside 1-1000 (the contract's range) is 422 validation_error."""
    vid = "vf_doesnotexist"
    url = f"{service.url}/callbacks/autocall/{vid}/{send}/{SIGNER.credential(vid, send)}"
    body = assert_problem(httpx.post(url, json=cdr("1_1_1_5_x_0987654321")), 422, "validation_error")
    assert body["errors"][0]["field"] == "send"


def test_unreadable_callback_is_422(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """An authenticated callback whose body is not a call report is 422 and changes nothing."""
    sandbox.config.callback_faults.drop = True
    with service.client() as client:
        vid = create(client)["id"]
        url = f"{service.url}/callbacks/autocall/{vid}/1/{SIGNER.credential(vid, 1)}"
        for body in (b"not json", b"[]", b'{"id": "x"}', b'{"id": "x", "status": "MAYBE"}'):
            assert_problem(httpx.post(url, content=body), 422, "invalid_callback")
        assert client.get(f"/otp/{vid}").json()["delivery"]["status"] == "calling"


def test_final_status_is_never_overwritten(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """A duplicate or a late, different report after a final one is acknowledged and ignored."""
    sandbox.config.callback_faults.drop = True
    with service.client() as client:
        verification = create(client)
        vid, call_id = verification["id"], verification["delivery"]["call_id"]
        url = f"{service.url}/callbacks/autocall/{vid}/1/{SIGNER.credential(vid, 1)}"
        assert httpx.post(url, json=cdr(call_id, "ANSWERED", 9)).json()["outcome"] == "recorded"
        assert httpx.post(url, json=cdr(call_id, "ANSWERED", 9)).json()["outcome"] == "duplicate"
        assert httpx.post(url, json=cdr(call_id, "FAIL", 0)).json()["outcome"] == "duplicate"
        delivery = client.get(f"/otp/{vid}").json()["delivery"]
    assert delivery["status"] == "answered"
    assert delivery["duration_seconds"] == 9
    assert delivery["provider_status"] == "ANSWERED"


def test_sandbox_duplicates_are_harmless(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """Callbacks the provider sends three times record one outcome."""
    sandbox.config.callback_faults.duplicate = 2
    with service.client() as client:
        vid = create(client, "0900000002")["id"]
        assert wait_for_final_delivery(client, vid)["delivery"]["status"] == "busy"


def test_callback_for_an_earlier_call_is_stale(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """After a resend, a late callback about the first call does not touch the new call's delivery."""
    sandbox.config.callback_faults.drop = True
    with service.client() as client:
        first = create(client)
        vid = first["id"]
        service.clock.advance(30)
        second = client.post(f"/otp/{vid}/resend").json()
        url = f"{service.url}/callbacks/autocall/{vid}/1/{SIGNER.credential(vid, 1)}"
        late = httpx.post(url, json=cdr(first["delivery"]["call_id"], "NOANWSER", 0))
        assert late.json()["outcome"] == "stale"
        delivery = client.get(f"/otp/{vid}").json()["delivery"]
    assert delivery["call_id"] == second["delivery"]["call_id"]
    assert delivery["status"] == "calling"


def test_reordered_callbacks_keep_the_latest_call(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """Callbacks released newest first still leave delivery describing the latest call."""
    sandbox.config.callback_faults.reorder = True
    with service.client() as client:
        vid = create(client, "0900000001")["id"]
        service.clock.advance(30)
        second = client.post(f"/otp/{vid}/resend").json()
        httpx.post(f"{sandbox.url}/_sandbox/callbacks/flush").raise_for_status()
        final = wait_for_final_delivery(client, vid)
    assert final["delivery"]["call_id"] == second["delivery"]["call_id"]
    assert final["delivery"]["status"] == "no_answer"


def test_callback_about_another_call_changes_nothing(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """An authentic callback whose body names a different call id is answered stale and records nothing."""
    sandbox.config.callback_faults.drop = True
    with service.client() as client:
        verification = create(client)
        vid, call_id = verification["id"], verification["delivery"]["call_id"]
        url = f"{service.url}/callbacks/autocall/{vid}/1/{SIGNER.credential(vid, 1)}"
        foreign = httpx.post(url, json=cdr("1_1_1_5_another-call_0987654321", "BUSY", 0))
        assert (foreign.status_code, foreign.json()["outcome"]) == (200, "stale")
        delivery = client.get(f"/otp/{vid}").json()["delivery"]
    assert (delivery["status"], delivery["call_id"]) == ("calling", call_id)
