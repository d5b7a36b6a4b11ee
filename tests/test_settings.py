"""Settings: production refuses to start on missing or placeholder secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from otpservice.settings import Settings, SettingsError

GOOD_ENV = {
    "OTP_REDIS_URL": "redis://127.0.0.1:6379/0",
    "OTP_API_KEYS": "k_live_0123456789abcdef",
    "OTP_PEPPER": "p" * 40,
    "OTP_PUBLIC_URL": "https://otp.example.vn",
    "OTP_AUTOCALL_URL": "https://autocall.example.vn",
    "OTP_AUTOCALL_SECRET_KEY": "30511f666-f888-411b-a6e0-11111fb6gg7a",
    "OTP_AUTOCALL_CAMPAIGN_ID": "1",
    "OTP_AUTOCALL_CALLER": "0123456789",
}


def test_complete_production_environment_loads() -> None:
    """A complete environment yields settings with the documented defaults."""
    settings = Settings.from_env(GOOD_ENV)
    assert settings.code_length == 6
    assert settings.ttl_seconds == 300
    assert settings.max_attempts == 5
    assert settings.autocall.template == "template_otp_1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTP_PEPPER", "changeme"),
        ("OTP_PEPPER", ""),
        ("OTP_API_KEYS", "changeme"),
        ("OTP_AUTOCALL_SECRET_KEY", ""),
    ],
)
def test_production_refuses_missing_or_placeholder_secret(name: str, value: str) -> None:
    """Production mode names the missing or placeholder secret instead of starting."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**GOOD_ENV, name: value})
    assert name in str(caught.value)


def test_secret_read_from_file(tmp_path: Path) -> None:
    """A secret can come from the file named by its ``_FILE`` variable."""
    pepper_file = tmp_path / "pepper"
    pepper_file.write_text("q" * 48 + "\n")
    env = {k: v for k, v in GOOD_ENV.items() if k != "OTP_PEPPER"} | {"OTP_PEPPER_FILE": str(pepper_file)}
    assert Settings.from_env(env).pepper == b"q" * 48


def test_out_of_range_policy_is_reported() -> None:
    """A policy value out of range is refused with its name and bounds."""
    with pytest.raises(SettingsError, match="OTP_CODE_LENGTH must be between 4 and 10"):
        Settings.from_env({**GOOD_ENV, "OTP_CODE_LENGTH": "3"})


@pytest.mark.parametrize("name", ["OTP_AUTOCALL_URL", "OTP_AUTOCALL_CAMPAIGN_ID"])
def test_production_needs_the_provider_named(name: str) -> None:
    """Production does not fall back to the local sandbox's URL or campaign."""
    env = {k: v for k, v in GOOD_ENV.items() if k != name}
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_production_public_url_must_be_https() -> None:
    """Callback URLs carry credentials, so production refuses a plain-http public URL."""
    with pytest.raises(SettingsError, match="OTP_PUBLIC_URL must be https"):
        Settings.from_env({**GOOD_ENV, "OTP_PUBLIC_URL": "http://otp.example.vn"})


def test_dev_mode_accepts_defaults() -> None:
    """Dev mode starts without production secrets (it fills in its own)."""
    assert Settings.from_env({}, mode="dev").autocall.url == "http://127.0.0.1:8090"


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:secret@10.0.0.5:6379/2",
        "rediss://10.0.0.5:6380/0",
        "unix:///run/redis.sock?db=1",
        "redis+sentinel://s1:26379,s2:26379,s3:26379/otp",
        "rediss+sentinel://user:pw@s1:26379/otp/3",
        "redis+cluster://n1:6379,n2:6379",
    ],
)
def test_every_redis_topology_url_is_accepted(url: str) -> None:
    """One server, Sentinel and Cluster URLs (with TLS and credentials) are valid OTP_REDIS_URLs."""
    assert Settings.from_env(GOOD_ENV | {"OTP_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    "url",
    [
        "localhost:6379",
        "http://localhost:6379",
        "redis+sentinel://s1:26379",
        "redis+sentinel://s1:26379/otp/x",
        "redis+cluster://n1:6379/0",
        "redis+cluster://n1",
        "redis+cluster://n1:99999",
    ],
)
def test_a_bad_redis_url_is_refused_at_start(url: str) -> None:
    """A Redis URL the service cannot use stops it at start with a line saying why."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(GOOD_ENV | {"OTP_REDIS_URL": url})
    assert any("OTP_REDIS_URL" in problem or "redis" in problem for problem in refused.value.problems)


def test_redis_url_may_come_from_a_file(tmp_path: Path) -> None:
    """OTP_REDIS_URL_FILE is read like the other secrets (the URL may carry a password)."""
    secret = tmp_path / "redis-url"
    secret.write_text("rediss://user:secret@redis.internal:6380/0\n")
    env = {k: v for k, v in GOOD_ENV.items() if k != "OTP_REDIS_URL"} | {"OTP_REDIS_URL_FILE": str(secret)}
    assert Settings.from_env(env).redis_url == "rediss://user:secret@redis.internal:6380/0"
