"""The sandbox's call outcomes and the callbacks it posts when calls end, received by a real webhook."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from otpservice.sandbox.config import EXAMPLE_TOKEN, SandboxConfig
from otpservice.sandbox.numbers import MAGIC_OUTCOMES
from tests.support.sandbox import CallbackReceiver, SandboxHandle, running_callback_receiver, running_sandbox

AUTH = {"Authorization": EXAMPLE_TOKEN}
CDR_FIELDS = {
    "id", "campaign_id", "code_otp", "created_at", "started_at", "ended_at", "duration", "keypress",
    "phone_number", "user_id", "param", "type", "status",
}  # fmt: skip


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    with running_callback_receiver() as webhook:
        yield webhook


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox() as handle:
        yield handle


@pytest.fixture
def sandbox(shared_sandbox: SandboxHandle, receiver: CallbackReceiver) -> SandboxHandle:
    """The module's sandbox reset to its seed, with default callback settings and an empty webhook."""
    httpx.post(f"{shared_sandbox.url}/_sandbox/reset").raise_for_status()
    shared_sandbox.config.callback_shape = "cdr"
    shared_sandbox.config.callback_apikey_in = "authorization"
    receiver.received.clear()
    return shared_sandbox


def place_otp(
    handle: SandboxHandle, receiver: CallbackReceiver, *callees: str, apikey: str | None = "hook-key"
) -> list[str]:
    """Place an OTP call to each callee with the receiver as callback; return the accepted call ids."""
    body: dict[str, Any] = {
        "callees": list(callees),
        "params": {"template_name": "template_otp_1", "code_otp": "204816"},
        "callback_url": f"{receiver.url}/hooks/autocall?v=1",
    }
    if apikey is not None:
        body["callback_apikey"] = apikey
    response = httpx.post(f"{handle.url}/api/v2/campaigns/1/otp", json=body, headers=AUTH)
    assert response.status_code == 200
    call_ids: list[str] = response.json()["data"]["results"]["success"]
    return call_ids


def test_magic_numbers_end_with_their_statuses(sandbox: SandboxHandle, receiver: CallbackReceiver) -> None:
    """Each magic number's call ends with its table status, in the CDR and in the callback."""
    phones = [*MAGIC_OUTCOMES, "0987654321"]
    call_ids = place_otp(sandbox, receiver, *phones)
    expected = {**MAGIC_OUTCOMES, "0987654321": "ANSWERED"}
    assert len(call_ids) == len(phones)
    sandbox.wait_until_ended(call_ids)
    with httpx.Client(base_url=sandbox.url, headers=AUTH) as client:
        reported = {
            cdr["phone_number"]: cdr
            for cdr in (client.get(f"/api/v2/report/{c}").json()["data"] for c in call_ids)
        }
    assert {phone: cdr["status"] for phone, cdr in reported.items()} == expected
    assert reported["0987654321"]["code_otp"] == "204816"
    assert all(cdr["code_otp"] is None for phone, cdr in reported.items() if phone != "0987654321")
    callbacks = {item.body["phone_number"]: item.body["status"] for item in receiver.wait_for(len(phones))}
    assert callbacks == expected


def test_callback_is_posted_to_the_callback_url_as_json(
    sandbox: SandboxHandle, receiver: CallbackReceiver
) -> None:
    """The callback is a JSON POST to the exact callback_url, path and query included."""
    [call_id] = place_otp(sandbox, receiver, "0987654321")
    [callback] = receiver.wait_for(1)
    assert (callback.method, callback.path, callback.query) == ("POST", "/hooks/autocall", "v=1")
    assert callback.headers["content-type"] == "application/json"
    assert callback.body["id"] == call_id
    [call] = sandbox.calls("0987654321")
    assert call["callbacks"][0]["status_code"] == 200


def test_callback_shape_cdr(sandbox: SandboxHandle, receiver: CallbackReceiver) -> None:
    """Shape "cdr" posts the bare CDR, the same record the report endpoint returns."""
    [call_id] = place_otp(sandbox, receiver, "0987654321")
    [callback] = receiver.wait_for(1)
    report = httpx.get(f"{sandbox.url}/api/v2/report/{call_id}", headers=AUTH).json()["data"]
    assert callback.body == report
    assert set(callback.body) == CDR_FIELDS


def test_callback_shape_data(sandbox: SandboxHandle, receiver: CallbackReceiver) -> None:
    """Shape "data" posts the CDR wrapped as {"data": CDR}."""
    sandbox.config.callback_shape = "data"
    [call_id] = place_otp(sandbox, receiver, "0987654321")
    [callback] = receiver.wait_for(1)
    assert set(callback.body) == {"data"}
    assert callback.body["data"]["id"] == call_id
    assert set(callback.body["data"]) == CDR_FIELDS


def test_callback_shape_legacy(sandbox: SandboxHandle, receiver: CallbackReceiver) -> None:
    """Shape "legacy" posts the older API's body, with status Success when answered and Fail otherwise."""
    sandbox.config.callback_shape = "legacy"
    answered, busy = place_otp(sandbox, receiver, "0987654321", "0900000002")
    bodies = {item.body["call_id"]: item.body for item in receiver.wait_for(2)}
    assert set(bodies[answered]) == {
        "call_id", "campaign_id", "user_id", "duration", "keypress", "phone_number", "start_time", "status",
    }  # fmt: skip
    assert (bodies[answered]["status"], bodies[busy]["status"]) == ("Success", "Fail")
    assert bodies[answered]["phone_number"] == "0987654321"


@pytest.mark.parametrize(
    ("placement", "header", "value"),
    [
        ("authorization", "authorization", "hook-key"),
        ("bearer", "authorization", "Bearer hook-key"),
        ("x-api-key", "x-api-key", "hook-key"),
        ("apikey", "apikey", "hook-key"),
    ],
)
def test_callback_apikey_in_headers(
    sandbox: SandboxHandle, receiver: CallbackReceiver, placement: Any, header: str, value: str
) -> None:
    """Each header placement carries callback_apikey in that header and not in the body."""
    sandbox.config.callback_apikey_in = placement
    place_otp(sandbox, receiver, "0987654321")
    [callback] = receiver.wait_for(1)
    assert callback.headers[header] == value
    assert "callback_apikey" not in callback.body


def test_callback_apikey_in_body(sandbox: SandboxHandle, receiver: CallbackReceiver) -> None:
    """Placement "body" adds a callback_apikey field to the JSON body and sends no auth header."""
    sandbox.config.callback_apikey_in = "body"
    place_otp(sandbox, receiver, "0987654321")
    [callback] = receiver.wait_for(1)
    assert callback.body["callback_apikey"] == "hook-key"
    assert "authorization" not in callback.headers


@pytest.mark.parametrize("placement", ["none", "authorization"])
def test_callback_without_apikey(sandbox: SandboxHandle, receiver: CallbackReceiver, placement: Any) -> None:
    """With placement "none", or no callback_apikey in the request, the callback carries no key."""
    sandbox.config.callback_apikey_in = placement
    place_otp(sandbox, receiver, "0987654321", apikey=None if placement == "authorization" else "hook-key")
    [callback] = receiver.wait_for(1)
    assert not {"authorization", "x-api-key", "apikey"} & set(callback.headers)
    assert "callback_apikey" not in callback.body


def test_no_callback_without_callback_url(sandbox: SandboxHandle, receiver: CallbackReceiver) -> None:
    """A call placed without callback_url ends without posting anything."""
    body = {"callees": ["0987654321"], "params": {"template_name": "template_otp_1", "code_otp": "1"}}
    call_ids = httpx.post(f"{sandbox.url}/api/v2/campaigns/1/otp", json=body, headers=AUTH).json()["data"][
        "results"
    ]["success"]
    assert sandbox.wait_until_ended(call_ids)[call_ids[0]]["callbacks"] == []
    assert receiver.wait_for(1, timeout=0.2) == []


def test_dropped_callbacks_never_arrive(sandbox: SandboxHandle, receiver: CallbackReceiver) -> None:
    """With the drop fault the call ends but no callback arrives; the attempt is recorded as dropped."""
    sandbox.config.callback_faults.drop = True
    [call_id] = place_otp(sandbox, receiver, "0987654321")
    call = sandbox.wait_until_ended([call_id])[call_id]
    assert receiver.wait_for(1, timeout=0.3) == []
    assert call["callbacks"][0]["error"] == "dropped by fault"


def test_duplicated_callbacks_arrive_n_plus_one_times(
    sandbox: SandboxHandle, receiver: CallbackReceiver
) -> None:
    """With duplicate=2 each callback arrives three times, identical."""
    sandbox.config.callback_faults.duplicate = 2
    [call_id] = place_otp(sandbox, receiver, "0987654321")
    received = receiver.wait_for(3)
    time.sleep(0.1)
    assert len(receiver.snapshot()) == 3
    assert all(item.body == received[0].body for item in received)
    assert received[0].body["id"] == call_id


def test_delayed_callbacks_arrive_late(sandbox: SandboxHandle, receiver: CallbackReceiver) -> None:
    """With a delay the callback arrives that long after the call has ended."""
    sandbox.config.callback_faults.delay_seconds = 0.4
    started = time.monotonic()
    [call_id] = place_otp(sandbox, receiver, "0987654321")
    assert sandbox.wait_until_ended([call_id])[call_id]["callbacks"] == []
    [callback] = receiver.wait_for(1)
    assert time.monotonic() - started >= 0.4
    assert callback.body["id"] == call_id


def test_reordered_callbacks_are_held_then_released_newest_first(
    sandbox: SandboxHandle, receiver: CallbackReceiver
) -> None:
    """With reorder, callbacks wait for a flush and then arrive newest first."""
    sandbox.config.callback_faults.reorder = True
    call_ids = [place_otp(sandbox, receiver, "0987654321")[0] for _ in range(3)]
    sandbox.wait_until_ended(call_ids)
    assert receiver.wait_for(1, timeout=0.2) == []
    flushed = httpx.post(f"{sandbox.url}/_sandbox/callbacks/flush")
    assert flushed.json() == {"released": 3}
    assert [item.body["id"] for item in receiver.wait_for(3)] == call_ids[::-1]
    assert httpx.post(f"{sandbox.url}/_sandbox/callbacks/flush").json() == {"released": 0}


def test_callback_can_be_resent_on_demand(sandbox: SandboxHandle, receiver: CallbackReceiver) -> None:
    """POST /_sandbox/calls/{id}/callback posts an ended call's callback again, now."""
    [call_id] = place_otp(sandbox, receiver, "0987654321")
    receiver.wait_for(1)
    response = httpx.post(f"{sandbox.url}/_sandbox/calls/{call_id}/callback")
    assert response.status_code == 200
    assert response.json()["delivery"]["status_code"] == 200
    first, second = receiver.wait_for(2)
    assert first.body == second.body
    assert len(sandbox.calls("0987654321")[0]["callbacks"]) == 2


def test_resending_an_unknown_or_unfinished_call_is_refused(receiver: CallbackReceiver) -> None:
    """Resending is 404 for an unknown call and 409 while the call is still ringing."""
    with running_sandbox(SandboxConfig(ring_seconds=30)) as handle:
        [call_id] = place_otp(handle, receiver, "0987654321")
        unknown = httpx.post(f"{handle.url}/_sandbox/calls/nope/callback")
        ringing = httpx.post(f"{handle.url}/_sandbox/calls/{call_id}/callback")
    assert (unknown.status_code, ringing.status_code) == (404, 409)


def test_unreachable_callback_url_is_recorded_not_raised(sandbox: SandboxHandle) -> None:
    """A callback to a closed port is recorded as a failed attempt and the call still ends normally."""
    with running_callback_receiver() as gone:
        closed_url = gone.url
    body = {
        "callees": ["0987654321"],
        "params": {"template_name": "template_otp_1", "code_otp": "1"},
        "callback_url": closed_url,
    }
    [call_id] = httpx.post(f"{sandbox.url}/api/v2/campaigns/1/otp", json=body, headers=AUTH).json()["data"][
        "results"
    ]["success"]
    deadline = time.monotonic() + 5
    while not (attempts := sandbox.wait_until_ended([call_id])[call_id]["callbacks"]):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert attempts[0]["status_code"] is None
    assert attempts[0]["error"]
    assert sandbox.calls("0987654321")[0]["status"] == "ANSWERED"
