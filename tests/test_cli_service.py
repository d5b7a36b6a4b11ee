"""The service commands: production refuses bad settings; dev mode runs the README's flow."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from otpservice.cli import main
from otpservice.tenants import hash_api_key
from tests.support.redis_servers import wait_until
from tests.support.serve_process import dev_service
from tests.support.servers import free_port


def test_serve_refuses_missing_and_placeholder_secrets() -> None:
    """`otpservice serve` exits non-zero and names every missing or placeholder secret."""
    env = {name: "" for name in os.environ if name.startswith("OTP_")}
    env |= {"OTP_PEPPER": "changeme", "OTP_API_KEYS": "changeme"}
    result = CliRunner().invoke(main, ["serve"], env=env)
    assert result.exit_code != 0
    for name in ("OTP_REDIS_URL", "OTP_PEPPER", "OTP_API_KEYS", "OTP_PUBLIC_URL", "OTP_AUTOCALL_SECRET_KEY"):
        assert name in result.output


def test_openapi_command_prints_the_contract() -> None:
    """`otpservice openapi` prints exactly the checked-in openapi.yaml."""
    result = CliRunner().invoke(main, ["openapi"])
    assert result.exit_code == 0
    assert result.output == (Path(__file__).resolve().parent.parent / "openapi.yaml").read_text()


@pytest.mark.long
def test_dev_mode_goes_from_nothing_to_an_approved_verification(tmp_path: Path) -> None:
    """`otpservice dev` starts Redis, the sandbox and a webhook receiver that prints each verified event;
    its printed flow approves, and SIGTERM stops it all."""
    port, sandbox_port, receiver_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    stderr_path = tmp_path / "dev.err"
    options = ("--receiver-port", str(receiver_port))
    with dev_service(env, port, sandbox_port, stderr_path, *options) as process:
        base = f"http://127.0.0.1:{port}"
        key = re.search(r"API key\s+(\S+)", stderr_path.read_text())
        assert key, stderr_path.read_text()
        headers = {"Authorization": f"Bearer {key.group(1)}"}
        created = httpx.post(f"{base}/otp", json={"phone": "0987654321"}, headers=headers).json()
        calls = httpx.get(
            f"http://127.0.0.1:{sandbox_port}/_sandbox/calls", params={"phone": "0987654321"}
        ).json()
        spoken = re.search(r"\d{6}", calls["calls"][-1]["spoken_text"])
        assert spoken
        verified = httpx.post(
            f"{base}/verify", json={"id": created["id"], "code": spoken.group()}, headers=headers
        )
        assert verified.json()["status"] == "approved"
        wait_until(
            lambda: "webhook verification.approved" in stderr_path.read_text(), 10, "the event printed"
        )
        process.terminate()
        exit_code = process.wait(timeout=20)
    assert exit_code == 0, stderr_path.read_text()[-2000:]
    banner = stderr_path.read_text()
    # every URL quoted (zsh globs an unquoted "?"), the dev budgets named
    assert f"'http://127.0.0.1:{sandbox_port}/_sandbox/calls?phone=0987654321'" in banner
    assert "calls per number 30/10m,300/1d" in banner
    redis_port = re.search(r"redis\s+'redis://127\.0\.0\.1:(\d+)", banner)
    assert redis_port
    with pytest.raises(ConnectionRefusedError):  # the embedded Redis went down with dev mode
        socket.create_connection(("127.0.0.1", int(redis_port.group(1))), timeout=2).close()
    log_lines = [line for line in stderr_path.read_text().splitlines() if re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert any("+8498*****21" in line for line in log_lines)
    assert not any("0987654321" in line or "84987654321" in line for line in log_lines)


def test_serve_refuses_a_bad_tenants_file_with_exit_code_2(tmp_path: Path) -> None:
    """`otpservice serve` exits 2 and prints one line per tenants-file problem, naming each setting."""
    tenants = tmp_path / "tenants.toml"
    tenants.write_text(
        f'[tenants.shop]\napi_keys = ["{hash_api_key("k_live_shop_0123456789abcdef")}"]\n'
        'sms_sender = "SHOP"\n'
        "ttl_seconds = 5\n"
        f'[tenants.bank]\napi_keys = ["{hash_api_key("k_live_bank_0123456789abcdef")}"]\n',
        encoding="utf-8",
    )
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("OTP_")}
    env |= {
        "OTP_REDIS_URL": "redis://127.0.0.1:6379/0",
        "OTP_PEPPER": "pQ7xK2vN9mW4rT8zL3bY6cH1dF5gJ0sA",
        "OTP_PUBLIC_URL": "https://otp.example.vn",
        "OTP_AUTOCALL_URL": "https://autocall.example.vn",
        "OTP_AUTOCALL_SECRET_KEY": "30511f666-f888-411b-a6e0-11111fb6gg7a",
        "OTP_AUTOCALL_CAMPAIGN_ID": "1",
        "OTP_AUTOCALL_CALLER": "0123456789",
        "OTP_TENANTS_FILE": str(tenants),
        "OTP_HASH_WORKERS": None,  # serve sets it; listing it here has the runner restore it
    }
    result = CliRunner().invoke(main, ["serve"], env=env)
    assert result.exit_code == 2, result.output
    problem_lines = [line for line in result.output.splitlines() if line.startswith("  - ")]
    assert len(problem_lines) == 2, result.output
    assert all(line.startswith("  - OTP_TENANTS_FILE: ") for line in problem_lines), result.output
    assert sum("tenants.shop.sms_sender is not a tenant setting" in line for line in problem_lines) == 1
    assert (
        sum("tenants.shop.ttl_seconds must be between 60 and 600, got 5" in line for line in problem_lines)
        == 1
    )
    assert "refusing to start" in result.output
    assert "shop.example.vn" not in result.output  # an unknown key's value may be a secret


def test_dev_mode_refuses_a_taken_port_before_starting_anything() -> None:
    """`otpservice dev` on a port in use exits 2 with one line naming the port and the option, no banner."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("OTP_")}
        result = CliRunner().invoke(main, ["dev", "--port", str(port), "--no-webhook-receiver"], env=env)
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "--port (make run PORT=...)" in result.output
    assert "otpservice dev mode" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_make_run_passes_its_ports_to_dev_mode() -> None:
    """`make run PORT=8001 SANDBOX_PORT=8092 RECEIVER_PORT=8093` starts dev mode on those ports."""
    root = Path(__file__).resolve().parent.parent
    dry_run = subprocess.run(
        ["make", "-n", "-o", "install", "run", "PORT=8001", "SANDBOX_PORT=8092", "RECEIVER_PORT=8093"],  # noqa: S607
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "otpservice dev --port 8001 --sandbox-port 8092 --receiver-port 8093" in dry_run.stdout
