"""``otpservice autocall ...`` end to end against the running sandbox, in-process with CliRunner."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from otpservice.cli import main
from otpservice.sandbox.config import EXAMPLE_SECRET_KEY
from tests.support.sandbox import SandboxHandle, running_sandbox
from tests.support.servers import refused_port


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox() as handle:
        yield handle


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The command configures process-wide logging; put it back for the next test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog_config, structlog_configured = structlog.get_config(), structlog.is_configured()
    yield
    root.handlers[:], root.level = handlers, level
    structlog.reset_defaults()
    if structlog_configured:
        structlog.configure(**structlog_config)


def autocall(url: str, *args: str, secret_key: str = EXAMPLE_SECRET_KEY) -> Result:
    env = {
        "OTP_AUTOCALL_URL": url,
        "OTP_AUTOCALL_SECRET_KEY": secret_key,
        "OTP_AUTOCALL_CAMPAIGN_ID": "1",
        "OTP_AUTOCALL_CALLER": "0281234567",
    }
    return CliRunner().invoke(main, ["autocall", *args], env=env, catch_exceptions=False)


def output(result: Result) -> dict[str, object]:
    assert result.exit_code == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def failure(result: Result) -> dict[str, object]:
    assert result.exit_code == 1
    parsed: dict[str, object] = json.loads(result.stderr)
    return parsed


def test_token_is_masked_unless_shown(sandbox: SandboxHandle) -> None:
    """``token`` prints the lifetime and a masked token; ``--show`` prints the whole token."""
    masked = output(autocall(sandbox.url, "token"))
    shown = output(autocall(sandbox.url, "token", "--show"))

    assert masked["lifetime_seconds"] == shown["lifetime_seconds"] == sandbox.config.token_lifetime_seconds
    assert isinstance(shown["token"], str)
    assert masked["token"] == f"{str(masked['token'])[:4]}…({len(shown['token'])} chars)"


def test_call_otp_then_cdr(sandbox: SandboxHandle) -> None:
    """``call-otp`` prints the accepted call id; ``cdr`` prints its record with the code hidden by default."""
    placed = output(autocall(sandbox.url, "call-otp", "0987654321", "--code", "482913"))
    accepted = placed["accepted"]
    assert isinstance(accepted, list)
    call_id: str = accepted[0]

    cdr = output(autocall(sandbox.url, "cdr", call_id))
    revealed = output(autocall(sandbox.url, "cdr", call_id, "--show-code"))

    assert (cdr["call_id"], cdr["phone_number"], cdr["call_type"]) == (call_id, "0987654321", "OTP")
    assert "482913" not in json.dumps(cdr)
    assert revealed["params"] == {"template_name": "template_otp_1", "code_otp": "482913"}


def test_call_otp_reports_rejections(sandbox: SandboxHandle) -> None:
    """A refused callee is printed with the provider's reason, and the command still succeeds."""
    placed = output(autocall(sandbox.url, "call-otp", "0900000008", "--code", "1234"))
    assert placed["rejected"] == [{"phone": "0900000008", "reason": "Blacklist"}]


def test_import_template_and_call_tts(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """Templates import from --file, --content or --otp-default, and ``call-tts`` fills key fields."""
    script = tmp_path / "debt.txt"
    script.write_text("Chào {{customer_name}}, nợ {{due_amount}}", encoding="utf-8")

    imported = output(autocall(sandbox.url, "import-template", "cli_debt", "--file", str(script)))
    output(autocall(sandbox.url, "import-template", "cli_otp", "--otp-default"))
    output(autocall(sandbox.url, "import-template", "cli_inline", "--content", "Mã {{code_otp}}"))
    placed = output(
        autocall(
            sandbox.url, "call-tts", "0987654321", "0987654322", "--template", "cli_debt",
            "--param", "customer_name=An", "--param", "due_amount=10.410.000",
        )
    )  # fmt: skip

    assert imported["name"] == "cli_debt"
    assert len(placed["accepted"]) == 2  # type: ignore[arg-type]
    assert autocall(sandbox.url, "import-template", "cli_none").exit_code == 2


def test_provider_errors_are_json_on_stderr(sandbox: SandboxHandle) -> None:
    """A provider failure prints {"error", "message"} on stderr and exits 1."""
    missing = failure(autocall(sandbox.url, "cdr", "no-such-call"))
    refused = failure(autocall(sandbox.url, "token", secret_key="wrong-secret-key"))

    assert (missing["error"], missing["status_code"]) == ("CallReportNotFound", 404)
    assert refused["error"] == "ProviderAuthFailed"
    assert "wrong-secret-key" not in json.dumps(refused)


def test_unreachable_provider_is_json_on_stderr() -> None:
    """Nothing listening at the URL prints ProviderUnavailable, saying nothing reached the provider."""
    with refused_port() as port:
        result = failure(autocall(f"http://127.0.0.1:{port}", "call-otp", "0987654321", "--code", "1"))
    assert (result["error"], result["request_may_have_reached_provider"]) == ("ProviderUnavailable", False)
