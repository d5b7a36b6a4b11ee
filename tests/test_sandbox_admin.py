"""The sandbox's /_sandbox/ admin endpoints, spoken-text logging, shutdown, and the CLI command."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from otpservice.cli.sandbox import sandbox_command
from otpservice.sandbox.config import EXAMPLE_SECRET_KEY, EXAMPLE_TOKEN, SandboxConfig
from tests.support.sandbox import SandboxHandle, running_sandbox

AUTH = {"Authorization": EXAMPLE_TOKEN}


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox() as handle:
        yield handle


@pytest.fixture
def client(shared_sandbox: SandboxHandle) -> Iterator[httpx.Client]:
    """A client of the module's sandbox, reset to its seed first."""
    with httpx.Client(base_url=shared_sandbox.url, timeout=5) as http:
        http.post("/_sandbox/reset").raise_for_status()
        yield http


def place_otp(client: httpx.Client, phone: str, code: str) -> str:
    body = {"callees": [phone], "params": {"template_name": "template_otp_1", "code_otp": code}}
    call_ids: list[str] = client.post("/api/v2/campaigns/1/otp", json=body, headers=AUTH).json()["data"][
        "results"
    ]["success"]
    return call_ids[0]


def test_calls_list_every_call_with_its_spoken_text(
    shared_sandbox: SandboxHandle, client: httpx.Client
) -> None:
    """GET /_sandbox/calls lists each placed call with the script as spoken, the OTP code filled in."""
    call_id = place_otp(client, "0987654321", "730518")
    shared_sandbox.wait_until_ended([call_id])
    [call] = client.get("/_sandbox/calls").json()["calls"]
    assert set(call) == {
        "call_id", "phone", "campaign_id", "template", "type", "spoken_text", "status", "created_at",
        "ended_at", "callbacks",
    }  # fmt: skip
    assert (call["call_id"], call["phone"], call["campaign_id"]) == (call_id, "0987654321", "1")
    assert (call["template"], call["type"], call["status"]) == ("template_otp_1", "OTP", "ANSWERED")
    assert call["spoken_text"] == (
        "Mã xác thực của bạn là 730518. Xin nhắc lại, mã xác thực của bạn là 730518."
    )


@pytest.mark.parametrize("query", ["0912345678", "+84912345678", "84912345678", "+84 912 345 678"])
def test_calls_filter_by_phone_in_any_form(client: httpx.Client, query: str) -> None:
    """The ?phone= filter matches the national number whether written 0..., +84... or 84..."""
    wanted = place_otp(client, "0912345678", "111111")
    place_otp(client, "0987654321", "222222")
    calls = client.get("/_sandbox/calls", params={"phone": query}).json()["calls"]
    assert [call["call_id"] for call in calls] == [wanted]


def test_config_shows_live_settings_without_secrets(client: httpx.Client) -> None:
    """GET /_sandbox/config shows timings, callback options and faults, never the secret keys."""
    config = client.get("/_sandbox/config").json()
    assert "secret_keys" not in config
    assert config["provider_faults"] == {
        "latency_seconds": 0.0,
        "error_rate": 0.0,
        "error_status": 503,
        "hang": False,
        "lose_answer": False,
    }
    assert config["callback_faults"] == {
        "drop": False,
        "duplicate": 0,
        "delay_seconds": 0.0,
        "reorder": False,
    }
    assert (config["callback_shape"], config["callback_apikey_in"]) == ("cdr", "authorization")


def test_patch_config_changes_the_live_config() -> None:
    """PATCH /_sandbox/config changes the very config object the handle holds (ints become floats)."""
    with running_sandbox(SandboxConfig(talk_seconds=4)) as handle:
        patch = {
            "ring_seconds": 1,
            "talk_seconds": 2.5,
            "callback_shape": "legacy",
            "callback_apikey_in": "x-api-key",
            "provider_faults": {"latency_seconds": 0.1},
            "callback_faults": {"duplicate": 1, "reorder": True},
        }
        response = httpx.patch(f"{handle.url}/_sandbox/config", json=patch)
        assert response.status_code == 200
        assert response.json()["callback_faults"]["duplicate"] == 1
        config = handle.config
        assert (config.ring_seconds, config.talk_seconds) == (1.0, 2.5)
        assert (config.callback_shape, config.callback_apikey_in) == ("legacy", "x-api-key")
        assert config.provider_faults.latency_seconds == 0.1
        assert (config.callback_faults.duplicate, config.callback_faults.reorder) == (1, True)


@pytest.mark.parametrize(
    "patch",
    [
        {"ring_seconds": -1},
        {"talk_seconds": "4"},
        {"callback_shape": "xml"},
        {"callback_apikey_in": "query"},
        {"provider_faults": {"error_rate": 1.5}},
        {"provider_faults": {"error_status": 200}},
        {"provider_faults": {"hang": 1}},
        {"callback_faults": {"duplicate": 1.5}},
        {"callback_faults": "drop"},
        {"no_such_setting": 1},
        {"secret_keys": ["x"]},
        {"token_lifetime_seconds": 0},
        [],
    ],
)
def test_patch_config_rejects_bad_values_atomically(client: httpx.Client, patch: Any) -> None:
    """A bad value is a 400 envelope and nothing changes, even settings that were valid in the same patch."""
    before = client.get("/_sandbox/config").json()
    body = {"ring_seconds": 3, **patch} if isinstance(patch, dict) else patch
    response = client.patch("/_sandbox/config", json=body)
    assert response.status_code == 400
    assert response.json()["messsage"] == "Bad Request"
    assert client.get("/_sandbox/config").json() == before


def test_reset_forgets_calls_and_faults_but_keeps_the_seed(
    shared_sandbox: SandboxHandle, client: httpx.Client
) -> None:
    """POST /_sandbox/reset forgets calls, imports and faults; the example token and templates work again."""
    place_otp(client, "0987654321", "123456")
    imported = {"name": "nhac_lich", "content": "Xin chào {{name}}"}
    assert client.post("/api/v2/campaigns/1/voice/import", json=imported, headers=AUTH).status_code == 200
    client.post("/_sandbox/tokens/expire").raise_for_status()
    shared_sandbox.config.provider_faults.error_rate = 1.0
    shared_sandbox.config.callback_faults.drop = True
    assert client.post("/_sandbox/reset").json() == {"reset": True}
    assert client.get("/_sandbox/calls").json()["calls"] == []
    assert shared_sandbox.config.provider_faults.error_rate == 0.0
    assert shared_sandbox.config.callback_faults.drop is False
    assert client.post("/api/v2/campaigns/1/voice/import", json=imported, headers=AUTH).status_code == 200
    place_otp(client, "0987654321", "654321")


def test_admin_endpoints_need_no_provider_token(client: httpx.Client) -> None:
    """The admin endpoints answer without any Authorization header."""
    assert client.get("/_sandbox/calls").status_code == 200
    assert client.get("/_sandbox/config").status_code == 200


def test_spoken_text_is_logged_when_enabled(caplog: pytest.LogCaptureFixture) -> None:
    """With log_spoken_text on, each answered call's spoken text (with its code) is logged; tokens never."""
    caplog.set_level(logging.INFO, logger="otpservice.sandbox")
    with (
        running_sandbox(SandboxConfig(log_spoken_text=True)) as handle,
        httpx.Client(base_url=handle.url) as client,
    ):
        token = client.post(
            "/api/v1/users/generate_access_token", json={"secret_key": EXAMPLE_SECRET_KEY}
        ).json()["data"]["access_token"]
        body = {
            "callees": ["0987654321"],
            "params": {"template_name": "template_otp_1", "code_otp": "918273"},
        }
        call_ids = client.post("/api/v2/campaigns/1/otp", json=body, headers={"Authorization": token}).json()[
            "data"
        ]["results"]["success"]
        handle.wait_until_ended(call_ids)
    spoken = [record.getMessage() for record in caplog.records if record.name == "otpservice.sandbox"]
    assert any("918273" in message for message in spoken)
    assert not any(token in text or EXAMPLE_SECRET_KEY in text for text in caplog.messages)


def test_spoken_text_is_not_logged_by_default(caplog: pytest.LogCaptureFixture, client: httpx.Client) -> None:
    """With log_spoken_text off (the default) nothing is logged about the call."""
    caplog.set_level(logging.INFO, logger="otpservice.sandbox")
    place_otp(client, "0987654321", "564738")
    time.sleep(0.1)
    assert not any("564738" in message for message in caplog.messages)


def test_shutdown_cancels_calls_in_progress() -> None:
    """Stopping the sandbox with calls still ringing cancels them promptly, without warnings."""
    started = time.monotonic()
    with (
        running_sandbox(SandboxConfig(ring_seconds=60)) as handle,
        httpx.Client(base_url=handle.url) as client,
    ):
        place_otp(client, "0987654321", "123123")
        assert handle.calls()[0]["status"] == ""
    assert time.monotonic() - started < 5


def test_cli_help_lists_the_timing_and_fault_flags() -> None:
    """``otpservice sandbox --help`` documents the host, port, timing and fault flags."""
    result = CliRunner().invoke(sandbox_command, ["--help"])
    assert result.exit_code == 0
    for flag in (
        "--host", "--port", "--ring-seconds", "--talk-seconds", "--token-lifetime", "--callback-shape",
        "--callback-apikey-in", "--latency", "--error-rate", "--error-status", "--hang", "--lose-answer",
        "--drop-callbacks",
        "--duplicate-callbacks", "--callback-delay", "--reorder-callbacks",
    ):  # fmt: skip
        assert flag in result.output


@pytest.mark.parametrize(
    "args", [["--error-rate", "2"], ["--ring-seconds", "-1"], ["--callback-shape", "xml"]]
)
def test_cli_rejects_bad_values_before_serving(args: list[str]) -> None:
    """Out-of-range or unknown flag values stop the command with a usage error instead of serving."""
    result = CliRunner().invoke(sandbox_command, args)
    assert result.exit_code == 2
