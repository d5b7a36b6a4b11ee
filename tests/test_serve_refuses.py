"""`otpservice serve` refuses bad settings with one line each and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE_ENV_FILE = Path(__file__).resolve().parent.parent / "deploy" / "otpservice.env.example"


def example_env() -> dict[str, str]:
    """The settings of deploy/otpservice.env.example, as systemd's EnvironmentFile reads them."""
    lines = EXAMPLE_ENV_FILE.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip().removeprefix('"').removesuffix('"') for name, value in pairs}


def test_serve_refuses_the_example_env_and_each_bad_value_with_one_line_each(tmp_path: Path) -> None:
    """The shipped example environment plus malformed values end `serve` with status 2 and one line per
    setting at fault, and no traceback."""
    pepper_file = tmp_path / "pepper"
    pepper_file.write_text("q" * 48)
    bad_values = {
        "OTP_REDIS_URL": "localhost:6379",
        "OTP_PUBLIC_URL": "https://otp.example.com",
        "OTP_ALLOWED_COUNTRIES": "Vietnam",
        "OTP_LOG_LEVEL": "verbose",
        "OTP_LOG_JSON": "flase",
        "OTP_DOCS": "nope",
        "OTP_PEPPER_FILE": str(pepper_file),  # beside the example's OTP_PEPPER: which is meant?
        "OTP_METRICS_KEYS": "changeme",
    }
    # The example asks for every <...> to be replaced: each is a placeholder serve must name.
    named_here = {name.removesuffix("_FILE") for name in bad_values}
    placeholders = {name for name, value in example_env().items() if "<" in value} - named_here
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTP_")}
    env |= example_env() | bad_values
    result = subprocess.run(
        [sys.executable, "-m", "otpservice", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    problems = [line.removeprefix("  - ") for line in result.stderr.splitlines() if line.startswith("  - ")]
    named = [problem.split()[0].rstrip(":") for problem in problems]
    expected = placeholders | named_here
    assert sorted(named) == sorted(expected), result.stderr
    said = "\n".join(problems)
    for name in placeholders:
        assert f"{name} holds a placeholder" in said, result.stderr
    for fragment in (
        "use two-letter ISO 3166 codes such as VN",
        "DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'verbose'",
        "got 'flase'",
        "RFC 2606",
        "OTP_PEPPER and OTP_PEPPER_FILE are both set",
        "redis://host:6379/0",
    ):
        assert fragment in said, result.stderr
    assert "changeme" not in said  # a secret's value is never echoed, placeholder or not
