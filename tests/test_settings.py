"""Settings: production refuses to start on missing, placeholder or malformed values, one line each."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from otpservice.cli import main
from otpservice.cli.service import _DEV_DEFAULTS
from otpservice.domain.limits import Limit
from otpservice.redis_url import parse_redis_url
from otpservice.sandbox.config import EXAMPLE_SECRET_KEY
from otpservice.settings import Settings, SettingsError
from otpservice.tenants import DEFAULT_TENANT, Tenant, hash_api_key

README = Path(__file__).resolve().parent.parent / "README.md"

GOOD_ENV = {
    "OTP_REDIS_URL": "redis://127.0.0.1:6379/0",
    "OTP_API_KEYS": "k_live_0123456789abcdef",
    "OTP_PEPPER": "pQ7xK2vN9mW4rT8zL3bY6cH1dF5gJ0sA",
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
    pepper_file.write_text("qA8sD3fG7hJ2kL6zX1cV5bN9mQ4wE0rT" + "\n")
    env = {k: v for k, v in GOOD_ENV.items() if k != "OTP_PEPPER"} | {"OTP_PEPPER_FILE": str(pepper_file)}
    assert Settings.from_env(env).pepper == b"qA8sD3fG7hJ2kL6zX1cV5bN9mQ4wE0rT"


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
        "redis://user:Rd1s-pw-0c2f@10.0.0.5:6379/2",
        "rediss://10.0.0.5:6380/0",
        "unix:///run/redis.sock?db=1",
        "redis+sentinel://s1:26379,s2:26379,s3:26379/otp",
        "rediss+sentinel://user:Pw9x-k2@s1:26379/otp/3",
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
        "redis+cluster://n1:637\u00b2",
        "redis+sentinel://s1:26379/otp/\u00b2",
        "redis://localhost:6379/\u00b2",
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
    secret.write_text("rediss://user:Rd1s-pw-0c2f@redis.internal:6380/0\n")
    env = {k: v for k, v in GOOD_ENV.items() if k != "OTP_REDIS_URL"} | {"OTP_REDIS_URL_FILE": str(secret)}
    assert Settings.from_env(env).redis_url == "rediss://user:Rd1s-pw-0c2f@redis.internal:6380/0"


SHOP_KEY = "k_live_shop_0123456789abcdef"
BANK_KEY = "k_live_bank_0123456789abcdef"


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


def tenants_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tenants.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_budget_defaults_are_the_documented_ones() -> None:
    """Unset budget variables give 3/10m,10/24h per phone, 10/1h per client, 20/10m per prefix and so on."""
    settings = Settings.from_env(GOOD_ENV)
    assert settings.phone_limits == (Limit(3, 600_000), Limit(10, 86_400_000))
    assert settings.client_ip_limits == (Limit(10, 3_600_000),)
    assert settings.prefix_limits == (Limit(20, 600_000),)
    assert settings.failure_lock == (Limit(10, 86_400_000),)
    assert settings.daily_call_cap == 10_000
    assert settings.global_calls_per_minute is None
    assert settings.tenants == ()
    assert settings.notices == ()


@pytest.mark.parametrize(
    ("name", "field", "value", "expected"),
    [
        ("OTP_PHONE_LIMITS", "phone_limits", "2/5m, 6/1d", (Limit(2, 300_000), Limit(6, 86_400_000))),
        ("OTP_PHONE_LIMITS", "phone_limits", "off", ()),
        ("OTP_CLIENT_IP_LIMITS", "client_ip_limits", "5/1.5h", (Limit(5, 5_400_000),)),
        ("OTP_CLIENT_IP_LIMITS", "client_ip_limits", "OFF", ()),
        (
            "OTP_PREFIX_LIMITS",
            "prefix_limits",
            "50/10m,200/24h",
            (Limit(50, 600_000), Limit(200, 86_400_000)),
        ),
        ("OTP_PHONE_FAILURE_LOCK", "failure_lock", "5/1h", (Limit(5, 3_600_000),)),
        ("OTP_PHONE_FAILURE_LOCK", "failure_lock", "off", ()),
        ("OTP_PHONE_LIMITS", "phone_limits", "  ", (Limit(3, 600_000), Limit(10, 86_400_000))),
    ],
)
def test_limit_variables_are_parsed(name: str, field: str, value: str, expected: tuple[Limit, ...]) -> None:
    """Each limit variable is read as a COUNT/WINDOW list, `off` as no limit and blank as the default."""
    assert getattr(Settings.from_env(GOOD_ENV | {name: value}), field) == expected


@pytest.mark.parametrize(
    "name", ["OTP_PHONE_LIMITS", "OTP_CLIENT_IP_LIMITS", "OTP_PREFIX_LIMITS", "OTP_PHONE_FAILURE_LOCK"]
)
@pytest.mark.parametrize("value", ["3/10", "0/10m", "3/40d", "3/10m,"])
def test_bad_limit_value_is_reported_naming_the_variable(name: str, value: str) -> None:
    """A limit list that does not parse is one problem line starting with the variable's name."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(GOOD_ENV | {name: value})
    assert len(refused.value.problems) == 1, refused.value.problems
    problem = refused.value.problems[0]
    assert problem.startswith(f"{name}: ")
    assert "COUNT/WINDOW" in problem or "window from 1s to 31d" in problem
    assert "\n" not in problem


def test_every_bad_limit_is_reported_at_once() -> None:
    """Several bad limit variables are all reported together, one line each."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(GOOD_ENV | {"OTP_PHONE_LIMITS": "x", "OTP_PREFIX_LIMITS": "0/1m"})
    assert [problem.split(":")[0] for problem in refused.value.problems] == [
        "OTP_PHONE_LIMITS",
        "OTP_PREFIX_LIMITS",
    ]


def test_deprecated_per_hour_variable_is_read_as_n_per_hour_with_a_notice() -> None:
    """OTP_PHONE_CALLS_PER_HOUR=N alone becomes N/1h, and a notice points at OTP_PHONE_LIMITS."""
    settings = Settings.from_env(GOOD_ENV | {"OTP_PHONE_CALLS_PER_HOUR": "4"})
    assert settings.phone_limits == (Limit(4, 3_600_000),)
    assert len(settings.notices) == 1
    assert "OTP_PHONE_CALLS_PER_HOUR" in settings.notices[0]
    assert "OTP_PHONE_LIMITS" in settings.notices[0]
    assert "4/1h" in settings.notices[0]


def test_deprecated_per_hour_variable_is_ignored_when_phone_limits_is_set() -> None:
    """With OTP_PHONE_LIMITS set, OTP_PHONE_CALLS_PER_HOUR is ignored and no notice is given."""
    settings = Settings.from_env(GOOD_ENV | {"OTP_PHONE_CALLS_PER_HOUR": "4", "OTP_PHONE_LIMITS": "2/10m"})
    assert settings.phone_limits == (Limit(2, 600_000),)
    assert settings.notices == ()


@pytest.mark.parametrize("value", ["0", "many"])
def test_bad_deprecated_per_hour_value_is_reported(value: str) -> None:
    """A deprecated per-hour value that is not a whole number from 1 up is a problem naming it."""
    with pytest.raises(SettingsError, match="OTP_PHONE_CALLS_PER_HOUR must be"):
        Settings.from_env(GOOD_ENV | {"OTP_PHONE_CALLS_PER_HOUR": value})


@pytest.mark.parametrize(("value", "expected"), [("off", None), ("OFF", None), ("250", 250), ("", 10_000)])
def test_daily_call_cap_may_be_off(value: str, expected: int | None) -> None:
    """OTP_DAILY_CALL_CAP takes a number, `off` for no cap, and defaults to 10000."""
    assert Settings.from_env(GOOD_ENV | {"OTP_DAILY_CALL_CAP": value}).daily_call_cap == expected


@pytest.mark.parametrize(("value", "expected"), [("", None), ("120", 120), ("off", None)])
def test_global_calls_per_minute_is_unlimited_unless_set(value: str, expected: int | None) -> None:
    """OTP_GLOBAL_CALLS_PER_MINUTE is no limit when unset (or off) and the number when set."""
    assert Settings.from_env(GOOD_ENV | {"OTP_GLOBAL_CALLS_PER_MINUTE": value}).global_calls_per_minute == (
        expected
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTP_DAILY_CALL_CAP", "0"),
        ("OTP_DAILY_CALL_CAP", "lots"),
        ("OTP_GLOBAL_CALLS_PER_MINUTE", "0"),
        ("OTP_GLOBAL_CALLS_PER_MINUTE", "1.5"),
    ],
)
def test_bad_call_cap_is_reported(name: str, value: str) -> None:
    """A cap that is not a whole number from 1 (nor off) is a problem naming the variable."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(GOOD_ENV | {name: value})
    assert len(refused.value.problems) == 1
    assert refused.value.problems[0].startswith(f"{name} must be")


def test_production_accepts_a_tenants_file_instead_of_api_keys(tmp_path: Path) -> None:
    """A production environment with OTP_TENANTS_FILE and no OTP_API_KEYS loads its tenants."""
    path = tenants_file(
        tmp_path,
        f'[tenants.shop]\napi_keys = ["{hash_api_key(SHOP_KEY)}"]\ncode_length = 8\n'
        f'[tenants.bank]\napi_keys = ["{hash_api_key(BANK_KEY)}"]\n',
    )
    settings = Settings.from_env(without(GOOD_ENV, "OTP_API_KEYS") | {"OTP_TENANTS_FILE": path})
    assert settings.api_keys == ()
    assert settings.tenants == (
        Tenant(name="shop", key_hashes=(hash_api_key(SHOP_KEY),), code_length=8),
        Tenant(name="bank", key_hashes=(hash_api_key(BANK_KEY),)),
    )
    assert settings.all_tenants() == settings.tenants


def test_production_needs_api_keys_or_a_tenants_file() -> None:
    """Production without OTP_API_KEYS and without OTP_TENANTS_FILE names both ways to fix it."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(without(GOOD_ENV, "OTP_API_KEYS"))
    assert refused.value.problems == ["OTP_API_KEYS (comma-separated) or OTP_TENANTS_FILE is required"]


def test_api_keys_become_the_default_tenant_beside_the_file(tmp_path: Path) -> None:
    """all_tenants() adds a tenant named default holding the sha256 hashes of OTP_API_KEYS."""
    path = tenants_file(tmp_path, f'[tenants.shop]\napi_keys = ["{hash_api_key(SHOP_KEY)}"]\n')
    settings = Settings.from_env(
        GOOD_ENV | {"OTP_API_KEYS": f"{BANK_KEY}, k_live_9876543210fedcba", "OTP_TENANTS_FILE": path}
    )
    assert [tenant.name for tenant in settings.tenants] == ["shop"]
    assert settings.all_tenants() == (
        Tenant(name="shop", key_hashes=(hash_api_key(SHOP_KEY),)),
        Tenant(
            name=DEFAULT_TENANT,
            key_hashes=(hash_api_key(BANK_KEY), hash_api_key("k_live_9876543210fedcba")),
        ),
    )


def test_api_keys_alone_are_the_default_tenant() -> None:
    """Without a tenants file, OTP_API_KEYS alone make up the one tenant, default."""
    settings = Settings.from_env(GOOD_ENV)
    assert settings.all_tenants() == (
        Tenant(name=DEFAULT_TENANT, key_hashes=(hash_api_key(GOOD_ENV["OTP_API_KEYS"]),)),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f'[tenants.shop]\napi_keys = ["{hash_api_key(SHOP_KEY)}"]\ncolour = "blue"\n',
            ["OTP_TENANTS_FILE: tenants.shop.colour is not a tenant setting"],
        ),
        (
            f'[tenants.shop]\napi_keys = ["{hash_api_key(SHOP_KEY)}"]\nttl_seconds = 5\nmax_attempts = 0\n',
            [
                "OTP_TENANTS_FILE: tenants.shop.ttl_seconds must be between 60 and 600, got 5",
                "OTP_TENANTS_FILE: tenants.shop.max_attempts must be between 1 and 20, got 0",
            ],
        ),
        ("[tenants.shop\n", ["OTP_TENANTS_FILE: ", "is not valid TOML"]),
        (f'[tenants.shop]\napi_keys = ["{SHOP_KEY}"]\n', ["tenants.shop.api_keys[0] is not"]),
    ],
    ids=["unknown-key", "two-bad-values", "bad-toml", "raw-key"],
)
def test_tenants_file_problems_surface_in_settings_problems(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    """Each problem of the tenants file is its own line of SettingsError.problems."""
    path = tenants_file(tmp_path, text)
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(without(GOOD_ENV, "OTP_API_KEYS") | {"OTP_TENANTS_FILE": path})
    problems = refused.value.problems
    for fragment in expected:
        assert sum(fragment in problem for problem in problems) >= 1, (fragment, problems)
    assert all("\n" not in problem for problem in problems)
    assert SHOP_KEY not in str(refused.value)


def test_tenants_file_problems_are_reported_with_the_other_settings(tmp_path: Path) -> None:
    """A bad tenants file and a bad environment variable are reported together, not one after the other."""
    path = tenants_file(tmp_path, f'[tenants.shop]\napi_keys = ["{hash_api_key(SHOP_KEY)}"]\nx = 1\n')
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(GOOD_ENV | {"OTP_TENANTS_FILE": path, "OTP_PHONE_LIMITS": "3/10"})
    problems = refused.value.problems
    assert len(problems) == 2, problems
    assert any(problem.startswith("OTP_PHONE_LIMITS: ") for problem in problems)
    assert any(problem.startswith("OTP_TENANTS_FILE: tenants.shop.x ") for problem in problems)


def test_missing_tenants_file_is_reported(tmp_path: Path) -> None:
    """A tenants file that cannot be read is a problem, not a service with no tenants."""
    env = without(GOOD_ENV, "OTP_API_KEYS") | {"OTP_TENANTS_FILE": str(tmp_path / "absent.toml")}
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert any("cannot read" in problem and "absent.toml" in problem for problem in refused.value.problems)


def test_tenant_named_default_clashes_with_api_keys(tmp_path: Path) -> None:
    """A file tenant named default while OTP_API_KEYS is set is refused; without the keys it is fine."""
    path = tenants_file(tmp_path, f'[tenants.default]\napi_keys = ["{hash_api_key(SHOP_KEY)}"]\n')
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(GOOD_ENV | {"OTP_TENANTS_FILE": path})
    assert refused.value.problems == [
        "OTP_TENANTS_FILE defines a tenant named default, which OTP_API_KEYS also defines: use one"
    ]
    settings = Settings.from_env(without(GOOD_ENV, "OTP_API_KEYS") | {"OTP_TENANTS_FILE": path})
    assert [tenant.name for tenant in settings.all_tenants()] == [DEFAULT_TENANT]


def test_key_in_both_api_keys_and_the_tenants_file_is_reported(tmp_path: Path) -> None:
    """A key that OTP_API_KEYS and a file tenant both hold is refused, naming the file tenant's entry."""
    path = tenants_file(
        tmp_path,
        f'[tenants.shop]\napi_keys = ["{hash_api_key(BANK_KEY)}", "{hash_api_key(SHOP_KEY)}"]\n',
    )
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(
            GOOD_ENV | {"OTP_API_KEYS": f"k_live_0123456789abcdef,{SHOP_KEY}", "OTP_TENANTS_FILE": path}
        )
    problems = refused.value.problems
    assert len(problems) == 1, problems
    assert "tenants.default.api_keys[1]" in problems[0]
    assert "the same key as tenants.shop.api_keys[1]" in problems[0]
    assert SHOP_KEY not in problems[0]


def test_tenants_file_is_also_read_in_dev_mode(tmp_path: Path) -> None:
    """Dev mode reads OTP_TENANTS_FILE too, and refuses a bad one just the same."""
    good = tenants_file(tmp_path, f'[tenants.shop]\napi_keys = ["{hash_api_key(SHOP_KEY)}"]\n')
    assert [t.name for t in Settings.from_env({"OTP_TENANTS_FILE": good}, mode="dev").tenants] == ["shop"]
    with pytest.raises(SettingsError, match="OTP_TENANTS_FILE: cannot read"):
        Settings.from_env({"OTP_TENANTS_FILE": str(tmp_path / "absent.toml")}, mode="dev")


WEBHOOK_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="  # base64 of 32 bytes


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.vn/otp", "http://127.0.0.1:9000/hooks", "http://localhost/h", "http://[::1]/h"],
)
def test_a_webhook_url_is_https_or_loopback(url: str) -> None:
    """OTP_WEBHOOK_URL may be https anywhere, or http on a loopback host."""
    settings = Settings.from_env(GOOD_ENV | {"OTP_WEBHOOK_URL": url, "OTP_WEBHOOK_SECRET": WEBHOOK_SECRET})
    default = next(tenant for tenant in settings.all_tenants() if tenant.name == DEFAULT_TENANT)
    assert (default.webhook_url, default.webhook_secret) == (url, WEBHOOK_SECRET)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"OTP_WEBHOOK_URL": "http://hooks.example.vn/otp"}, "OTP_WEBHOOK_URL must be https://"),
        ({"OTP_WEBHOOK_URL": "ftp://hooks.example.vn"}, "OTP_WEBHOOK_URL must be an http(s) URL"),
        ({"OTP_WEBHOOK_URL": "https://hooks.example.vn:99999/h"}, "OTP_WEBHOOK_URL must be an http(s) URL"),
        ({"OTP_WEBHOOK_URL": "https://hooks.example.vn:abc/h"}, "OTP_WEBHOOK_URL must be an http(s) URL"),
        ({"OTP_WEBHOOK_URL": "https://[::1/h"}, "OTP_WEBHOOK_URL must be an http(s) URL"),
        ({"OTP_WEBHOOK_SECRET": "not-a-secret"}, "OTP_WEBHOOK_SECRET must have the Standard Webhooks form"),
        ({"OTP_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "OTP_WEBHOOK_SECRET must hold at least 24"),
        ({"OTP_WEBHOOK_SECRET": ""}, "OTP_WEBHOOK_URL and OTP_WEBHOOK_SECRET go together"),
    ],
)
def test_a_bad_webhook_setting_is_refused(changes: dict[str, str], expected: str) -> None:
    """A webhook URL that is not https (off loopback), or a secret not in the whsec_ form, stops the start."""
    env = GOOD_ENV | {"OTP_WEBHOOK_URL": "https://hooks.example.vn", "OTP_WEBHOOK_SECRET": WEBHOOK_SECRET}
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env | changes)
    assert any(problem.startswith(expected) for problem in refused.value.problems), refused.value.problems
    assert all("not-a-secret" not in problem for problem in refused.value.problems)


def test_tenant_webhooks_are_read_and_checked(tmp_path: Path) -> None:
    """A tenant's webhook_url and webhook_secret are read together; a bad secret is named, never echoed."""
    key = hash_api_key("k_live_shop_0123456789abcdef")
    good = tmp_path / "good.toml"
    good.write_text(
        f'[tenants.shop]\napi_keys = ["{key}"]\nwebhook_url = "https://shop.example.vn/hooks"\n'
        f'webhook_secret = "{WEBHOOK_SECRET}"\n'
    )
    env = {k: v for k, v in GOOD_ENV.items() if k != "OTP_API_KEYS"}
    shop = Settings.from_env(env | {"OTP_TENANTS_FILE": str(good)}).tenants[0]
    assert shop.webhook_url == "https://shop.example.vn/hooks"
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'[tenants.shop]\napi_keys = ["{key}"]\nwebhook_url = "https://shop.example.vn/hooks"\n'
        'webhook_secret = "whsec_!!!"\n'
    )
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env | {"OTP_TENANTS_FILE": str(bad)})
    assert refused.value.problems == [
        "OTP_TENANTS_FILE: tenants.shop.webhook_secret must be whsec_ followed by base64"
    ]


def refusal(env: dict[str, str], mode: str = "production") -> list[str]:
    """The problems from_env names for ENV (and fails when it names none)."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env, mode=mode)  # type: ignore[arg-type]
    return refused.value.problems


SECRETS_IN_FILES = (
    "OTP_REDIS_URL",
    "OTP_API_KEYS",
    "OTP_PEPPER",
    "OTP_AUTOCALL_SECRET_KEY",
    "OTP_WEBHOOK_SECRET",
    "OTP_METRICS_KEYS",
)


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"OTP_AUTOCALL_URL": "http://<API_HOST>"}, "OTP_AUTOCALL_URL"),
        ({"OTP_AUTOCALL_URL": "https://{API_HOST}/api"}, "OTP_AUTOCALL_URL"),
        ({"OTP_AUTOCALL_URL": "https://your-provider.vn"}, "OTP_AUTOCALL_URL"),
        ({"OTP_PUBLIC_URL": "https://<public host>"}, "OTP_PUBLIC_URL"),
        ({"OTP_AUTOCALL_CALLER": "<caller number>"}, "OTP_AUTOCALL_CALLER"),
        ({"OTP_AUTOCALL_CAMPAIGN_ID": "TODO"}, "OTP_AUTOCALL_CAMPAIGN_ID"),
        ({"OTP_AUTOCALL_CAMPAIGN_ID": "<campaign id>"}, "OTP_AUTOCALL_CAMPAIGN_ID"),
        ({"OTP_AUTOCALL_TEMPLATE": "changeme"}, "OTP_AUTOCALL_TEMPLATE"),
        ({"OTP_TENANTS_FILE": "/etc/otpservice/<tenants>.toml"}, "OTP_TENANTS_FILE"),
        ({"OTP_REDIS_URL": "redis://<host>:6379/0"}, "OTP_REDIS_URL"),
        ({"OTP_REDIS_URL": "redis://:changeme@redis.internal:6379/0"}, "OTP_REDIS_URL"),
        ({"OTP_AUTOCALL_SECRET_KEY": "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"}, "OTP_AUTOCALL_SECRET_KEY"),
        ({"OTP_AUTOCALL_SECRET_KEY": "your-secret-key"}, "OTP_AUTOCALL_SECRET_KEY"),
        ({"OTP_AUTOCALL_SECRET_KEY": '"<Autocall secret key>"'}, "OTP_AUTOCALL_SECRET_KEY"),
        ({"OTP_PEPPER": "<32+ random bytes, e.g. the output of: openssl rand -base64 48>"}, "OTP_PEPPER"),
        ({"OTP_API_KEYS": "<comma-separated API keys, 16+ random characters each>"}, "OTP_API_KEYS"),
        ({"OTP_API_KEYS": "k_live_0123456789abcdef,changeme"}, "OTP_API_KEYS"),
        ({"OTP_METRICS_KEYS": "changeme"}, "OTP_METRICS_KEYS"),
        (
            {"OTP_WEBHOOK_URL": "https://<receiver>/otp-events", "OTP_WEBHOOK_SECRET": WEBHOOK_SECRET},
            "OTP_WEBHOOK_URL",
        ),
    ],
)
def test_a_placeholder_is_one_line_naming_its_setting(changes: dict[str, str], name: str) -> None:
    """A placeholder in any setting, URLs and caller included, is refused in one line naming the setting."""
    problems = refusal(GOOD_ENV | changes)
    assert len(problems) == 1, problems
    assert problems[0].startswith(name)
    assert "placeholder" in problems[0]
    if name in SECRETS_IN_FILES:  # a secret is never echoed, not even a placeholder
        assert changes[name].strip('"') not in problems[0]


@pytest.mark.parametrize("name", ["OTP_PUBLIC_URL", "OTP_AUTOCALL_URL"])
@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "https://otp.example.com",
        "https://otp.example.org/base",
        "https://EXAMPLE.NET",
        "https://otp.example",
        "https://api.invalid",
    ],
)
def test_a_host_reserved_for_documentation_is_refused(name: str, url: str) -> None:
    """URLs on example.com/.net/.org, *.example or *.invalid (RFC 2606) are refused in every mode."""
    for mode in ("production", "dev"):
        (problem,) = refusal(GOOD_ENV | {name: url}, mode)
        assert problem.startswith(f"{name} names ")
        assert "RFC 2606" in problem


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("redis://redis.example.com:6379/0", "redis.example.com"),
        ("rediss://default:Rd1s-pw-0c2f@Cache.Example.NET.:6380/0", "cache.example.net"),
        ("redis+sentinel://sentinel.example.org:26379/mymaster/0", "sentinel.example.org"),
        ("rediss+sentinel://u:Rd1s-pw-0c2f@s1.vn:26379,s2.example:26379/otp", "s2.example"),
        ("redis+cluster://:Rd1s-pw-0c2f@n1.vn:6379,n.invalid:6379,n.example:6379", "n.invalid, n.example"),
    ],
)
def test_a_redis_host_reserved_for_documentation_is_refused(url: str, hosts: str) -> None:
    """Every host of a Redis URL (server, each Sentinel, each Cluster seed) on an RFC 2606 name is
    refused in every mode, naming the hosts and never the password."""
    for mode in ("production", "dev"):
        (problem,) = refusal(GOOD_ENV | {"OTP_REDIS_URL": url}, mode)
        assert problem.startswith(f"OTP_REDIS_URL names {hosts}, ")
        assert "RFC 2606" in problem
        assert "Rd1s-pw-0c2f" not in problem


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTP_AUTOCALL_SECRET_KEY", "REPLACE_ME"),
        ("OTP_AUTOCALL_SECRET_KEY", "replaceme123"),
        ("OTP_AUTOCALL_SECRET_KEY", "Replace this with the Autocall key"),
        ("OTP_PEPPER", "replace-with-at-least-32-random-bytes-here"),
        ("OTP_PEPPER", "insert-32-random-bytes-here-0123456789"),
        ("OTP_API_KEYS", "k_live_0123456789abcdef,k_live_fill_me_in_0123456"),
        ("OTP_API_KEYS", "api-key-goes-here-0123456789"),
        ("OTP_METRICS_KEYS", "set-me-to-a-random-metrics-key"),
        ("OTP_REDIS_URL", "redis://:REPLACE_ME@redis.internal:6379/0"),
    ],
)
def test_a_replace_style_secret_is_refused_in_production(name: str, value: str) -> None:
    """Production refuses secrets that say to replace, fill in, set or insert them, without echoing them."""
    (problem,) = refusal(GOOD_ENV | {name: value})
    assert problem.startswith(name)
    assert "placeholder" in problem
    assert value not in problem


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTP_AUTOCALL_CAMPAIGN_ID", "REPLACE_ME"),
        ("OTP_AUTOCALL_TEMPLATE", "replace-with-the-otp-template"),
        ("OTP_AUTOCALL_CALLER", "fill-me"),
        ("OTP_AUTOCALL_URL", "https://replace-this.vn"),
        ("OTP_PUBLIC_URL", "https://otp.vn/insert-path-here"),
        ("OTP_REDIS_URL", "redis://set-me:6379/0"),
        ("OTP_TENANTS_FILE", "/etc/otpservice/replaceme.toml"),
    ],
)
def test_a_replace_style_value_is_refused_in_every_mode(name: str, value: str) -> None:
    """A setting that is not secret and still says to replace or fill it in is refused in dev mode too."""
    for mode in ("production", "dev"):
        (problem,) = refusal(GOOD_ENV | {name: value}, mode)
        assert problem.startswith(f"{name} holds a placeholder")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTP_AUTOCALL_SECRET_KEY", "k9replacemeQ-0a1b2c3d4e5f"),
        ("OTP_PEPPER", "replacement-pepper-0a1b2c3d4e5f6a7b8c9d0e1f"),
        ("OTP_API_KEYS", "k_live_settlement_0123456789"),
        ("OTP_METRICS_KEYS", "scrape-reset-me9-0123456789"),
        ("OTP_AUTOCALL_TEMPLATE", "template_replacement_1"),
        ("OTP_PUBLIC_URL", "https://otp.example.vn/input-here"),
        ("OTP_REDIS_URL", "redis://redis.example.vn:6379/0"),
    ],
)
def test_a_value_merely_holding_a_stand_in_word_is_accepted(name: str, value: str) -> None:
    """Stand-in words count only between separators, so real values that contain their letters still load."""
    assert Settings.from_env(GOOD_ENV | {name: value})


@pytest.mark.parametrize("name", ["OTP_PUBLIC_URL", "OTP_AUTOCALL_URL"])
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://127.9.9.9/otp", "http://[::1]:8000", "http://localhost:8000"]
)
def test_plain_http_is_accepted_on_loopback(name: str, url: str) -> None:
    """Production accepts http:// for the public and provider URLs when the host is loopback."""
    settings = Settings.from_env(GOOD_ENV | {name: url + "/"})
    assert url in (settings.public_url, settings.autocall.url)


def test_plain_http_off_loopback_is_refused_for_callbacks_and_warned_about_for_the_provider() -> None:
    """Production refuses an http:// public URL off loopback; an http:// provider starts with a notice."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(GOOD_ENV | {"OTP_PUBLIC_URL": "http://otp.vn"})
    assert any("OTP_PUBLIC_URL must be https://" in line for line in refused.value.problems)
    settings = Settings.from_env(GOOD_ENV | {"OTP_AUTOCALL_URL": "http://autocall.provider.vn"})
    assert settings.autocall.url == "http://autocall.provider.vn"
    assert any(notice.startswith("OTP_AUTOCALL_URL is plain http") for notice in settings.notices)


@pytest.mark.parametrize("name", ["OTP_PUBLIC_URL", "OTP_AUTOCALL_URL"])
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://", "URL with a host"),
        ("otp.vn", "URL with a host"),
        ("http://[::1", "URL with a host"),
        ("ftp://otp.vn", "must be an http:// or https://"),
        ("https://otp.vn/?a=1", "query"),
        ("https://otp.vn/base#top", "fragment"),
        ("https://user:pw@otp.vn", "credentials"),
        ("https://otp.vn:99999", "port"),
    ],
)
def test_a_base_url_that_cannot_work_is_refused(name: str, url: str, expected: str) -> None:
    """Base URLs need http(s) and a host, no query, fragment or credentials, and https off loopback."""
    (problem,) = refusal(GOOD_ENV | {name: url})
    assert problem.startswith(name)
    assert expected in problem
    assert "pw" not in problem


def test_dev_mode_accepts_plain_http_anywhere() -> None:
    """Dev mode lets the public and provider URLs be http:// on any host (a laptop on a LAN)."""
    settings = Settings.from_env(
        {"OTP_PUBLIC_URL": "http://laptop.lan:8000", "OTP_AUTOCALL_URL": "http://provider.vn"}, mode="dev"
    )
    assert settings.public_url == "http://laptop.lan:8000"


def test_dev_mode_accepts_its_own_defaults() -> None:
    """`otpservice dev`'s defaults (sandbox URL, caller, example secret key) pass every check."""
    env = {name: value.format(port=8000, sandbox_port=8090) for name, value in _DEV_DEFAULTS.items()}
    env |= {
        "OTP_AUTOCALL_SECRET_KEY": EXAMPLE_SECRET_KEY,
        "OTP_API_KEYS": "dev_0123456789abcdefghijkl",
        "OTP_PEPPER": "dev-pepper",
        "OTP_REDIS_URL": "redis://127.0.0.1:6390/0",
        "OTP_WEBHOOK_URL": "http://127.0.0.1:8091/webhooks",
        "OTP_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    settings = Settings.from_env(env, mode="dev")
    assert settings.autocall.secret_key == EXAMPLE_SECRET_KEY
    assert settings.log_json is False


def test_dev_mode_leaves_weak_secrets_alone_but_not_template_text() -> None:
    """Dev mode takes short or stand-in secrets, yet still refuses a whole <...> left from an example."""
    assert Settings.from_env({"OTP_API_KEYS": "test", "OTP_PEPPER": "changeme"}, mode="dev").api_keys == (
        "test",
    )
    (problem,) = refusal({"OTP_AUTOCALL_SECRET_KEY": "<secret key>"}, "dev")
    assert problem.startswith("OTP_AUTOCALL_SECRET_KEY holds a placeholder")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("VN", ("VN",)), ("vn", ("VN",)), ("VN,VN", ("VN",)), ("", ("VN",))],
)
def test_allowed_countries_are_read_as_region_codes(value: str, expected: tuple[str, ...]) -> None:
    """OTP_ALLOWED_COUNTRIES takes two-letter regions in any case, and defaults to VN."""
    assert Settings.from_env(GOOD_ENV | {"OTP_ALLOWED_COUNTRIES": value}).allowed_countries == expected


@pytest.mark.parametrize("value", ["VN,TH", "th", "US"])
def test_a_country_the_provider_cannot_dial_is_refused(value: str) -> None:
    """A region other than VN is refused: its numbers, given to the provider in national format,
    would ring a Vietnamese subscriber."""
    (problem,) = refusal(GOOD_ENV | {"OTP_ALLOWED_COUNTRIES": value})
    assert problem.startswith("OTP_ALLOWED_COUNTRIES")
    assert "dialled as a Vietnamese one" in problem


@pytest.mark.parametrize(
    ("value", "shown"),
    [("Vietnam", "'Vietnam'"), ("VN,USA", "'USA'"), ("UK", "'UK'"), ("VN,001", "'001'"), (",", "no region")],
)
def test_a_country_phonenumbers_does_not_know_is_refused(value: str, shown: str) -> None:
    """A name that is not an ISO 3166 alpha-2 region phonenumbers knows is one line pointing to VN."""
    (problem,) = refusal(GOOD_ENV | {"OTP_ALLOWED_COUNTRIES": value})
    assert problem.startswith("OTP_ALLOWED_COUNTRIES")
    assert shown in problem
    assert "use two-letter ISO 3166 codes such as VN" in problem


@pytest.mark.parametrize(("value", "expected"), [("debug", "DEBUG"), (" Warning ", "WARNING"), ("", "INFO")])
def test_log_level_is_read_in_any_case(value: str, expected: str) -> None:
    """OTP_LOG_LEVEL takes the standard level names in any case, INFO when unset."""
    assert Settings.from_env(GOOD_ENV | {"OTP_LOG_LEVEL": value}).log_level == expected


@pytest.mark.parametrize("value", ["verbose", "10", "trace"])
def test_an_unknown_log_level_is_refused(value: str) -> None:
    """A level logging does not know is one line listing the accepted ones, not a traceback at start."""
    (problem,) = refusal(GOOD_ENV | {"OTP_LOG_LEVEL": value})
    assert problem == f"OTP_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {value!r}"


@pytest.mark.parametrize("name", ["OTP_LOG_JSON", "OTP_DOCS"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("FALSE", False),
        ("1", True),
        ("0", False),
        ("Yes", True),
        ("no", False),
        ("on", True),
        ("OFF", False),
    ],
)
def test_booleans_take_the_usual_spellings(name: str, value: str, expected: bool) -> None:
    """true/false, 1/0, yes/no and on/off, in any case, are booleans."""
    settings = Settings.from_env(GOOD_ENV | {name: value})
    assert (settings.log_json if name == "OTP_LOG_JSON" else settings.docs) is expected


@pytest.mark.parametrize("name", ["OTP_LOG_JSON", "OTP_DOCS"])
@pytest.mark.parametrize("value", ["flase", "nope", "2", "y"])
def test_a_boolean_that_is_neither_is_refused(name: str, value: str) -> None:
    """A misspelt boolean is refused naming the accepted forms, instead of silently reading as false."""
    (problem,) = refusal(GOOD_ENV | {name: value})
    assert problem == f"{name} must be true or false (or 1/0, yes/no, on/off), got {value!r}"


@pytest.mark.parametrize(
    "url", ["redis://h:abc/0", "redis://h:6379/x", "redis:///0", "unix://", "redis:6379"]
)
def test_a_single_server_redis_url_is_checked_at_start(url: str) -> None:
    """A one-server Redis URL with a bad port, database, host or socket is one line at start."""
    (problem,) = refusal(GOOD_ENV | {"OTP_REDIS_URL": url})
    assert problem.startswith("OTP_REDIS_URL")


def test_a_quoted_value_is_refused() -> None:
    """Quotes that an env file kept (docker --env-file does) are named instead of failing obscurely."""
    (problem,) = refusal(GOOD_ENV | {"OTP_LOG_LEVEL": '"INFO"'})
    assert problem.startswith("OTP_LOG_LEVEL is wrapped in quotes")


@pytest.mark.parametrize(
    ("caller", "accepted"), [("+84281234567", True), ("028-730", False), ("02 8730", False), ("12", False)]
)
def test_the_caller_is_digits_with_an_optional_plus(caller: str, accepted: bool) -> None:
    """OTP_AUTOCALL_CALLER follows the tenant caller rule: 3 to 20 digits, optionally after a +."""
    env = GOOD_ENV | {"OTP_AUTOCALL_CALLER": caller}
    if accepted:
        assert Settings.from_env(env).autocall.caller == caller
    else:
        (problem,) = refusal(env)
        assert problem.startswith("OTP_AUTOCALL_CALLER must be 3 to 20 characters, digits")


WEBHOOK_ENV = {"OTP_WEBHOOK_URL": "https://hooks.example.vn/otp"}
FILE_CASES: list[tuple[str, str, Callable[[Settings], object], object]] = [
    (
        "OTP_REDIS_URL",
        "rediss://user:Rd1s-pw-0c2f@redis.internal:6380/0",
        lambda s: s.redis_url,
        "rediss://user:Rd1s-pw-0c2f@redis.internal:6380/0",
    ),
    (
        "OTP_API_KEYS",
        "k_file_0123456789abcdef\nk_file_fedcba9876543210",
        lambda s: s.api_keys,
        ("k_file_0123456789abcdef", "k_file_fedcba9876543210"),
    ),
    (
        "OTP_PEPPER",
        "fR3kW8pZ1xN6vB2mQ9tY4cL7hJ0sD5gA",
        lambda s: s.pepper,
        b"fR3kW8pZ1xN6vB2mQ9tY4cL7hJ0sD5gA",
    ),
    (
        "OTP_AUTOCALL_SECRET_KEY",
        "file-secret-key-0123",
        lambda s: s.autocall.secret_key,
        "file-secret-key-0123",
    ),
    ("OTP_WEBHOOK_SECRET", WEBHOOK_SECRET, lambda s: s.webhook_secret, WEBHOOK_SECRET),
    ("OTP_METRICS_KEYS", "scrape-0123456789abcdef", lambda s: s.metrics_keys, ("scrape-0123456789abcdef",)),
]


@pytest.mark.parametrize(("name", "text", "read", "expected"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_each_secret_may_come_from_its_file(
    tmp_path: Path, name: str, text: str, read: Callable[[Settings], object], expected: object
) -> None:
    """Every secret setting is read from the file NAME_FILE names (trailing newline dropped)."""
    path = tmp_path / name
    path.write_text(text + "\n")
    env = without(GOOD_ENV | WEBHOOK_ENV | {"OTP_WEBHOOK_SECRET": WEBHOOK_SECRET}, name)
    assert read(Settings.from_env(env | {f"{name}_FILE": str(path)})) == expected


@pytest.mark.parametrize("name", SECRETS_IN_FILES)
def test_a_secret_and_its_file_together_are_refused(tmp_path: Path, name: str) -> None:
    """Setting both NAME and NAME_FILE is ambiguous: one line says so, whatever either holds."""
    path = tmp_path / name
    path.write_text("whatever\n")
    env = (
        GOOD_ENV
        | WEBHOOK_ENV
        | {"OTP_WEBHOOK_SECRET": WEBHOOK_SECRET, "OTP_METRICS_KEYS": "mK4x9Qz2Lw7Pn3Rb5Tv8"}
    )
    (problem,) = refusal(env | {f"{name}_FILE": str(path)})
    assert problem == f"{name} and {name}_FILE are both set: set one"


def test_an_unreadable_or_empty_secret_file_is_refused(tmp_path: Path) -> None:
    """A required secret's file that is missing or empty is named as such, once, not as a missing setting."""
    empty = tmp_path / "empty"
    empty.write_text("\n")
    env = without(GOOD_ENV, "OTP_PEPPER", "OTP_AUTOCALL_SECRET_KEY")
    problems = refusal(
        env | {"OTP_PEPPER_FILE": str(tmp_path / "absent"), "OTP_AUTOCALL_SECRET_KEY_FILE": str(empty)}
    )
    assert problems == [
        f"OTP_AUTOCALL_SECRET_KEY_FILE names an empty file: {empty}",
        f"OTP_PEPPER_FILE cannot be read: {tmp_path / 'absent'}: No such file or directory",
    ]


def test_an_empty_file_leaves_an_optional_secret_unset(tmp_path: Path) -> None:
    """Empty files for the webhook secret and metrics keys (mounted though unused) mean neither is set."""
    empty = tmp_path / "empty"
    empty.write_text("")
    env = GOOD_ENV | {"OTP_WEBHOOK_SECRET_FILE": str(empty), "OTP_METRICS_KEYS_FILE": str(empty)}
    settings = Settings.from_env(env)
    assert (settings.webhook_secret, settings.metrics_keys) == ("", ())


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("short", "OTP_METRICS_KEYS: key 1 is shorter than 16 characters"),
        ("scrape-0123456789abcdef,xxx", "OTP_METRICS_KEYS: key 2 is a placeholder"),
        (GOOD_ENV["OTP_API_KEYS"], "OTP_METRICS_KEYS holds a key that is also an API key"),
    ],
)
def test_metrics_keys_follow_the_api_key_rules_and_stay_apart(keys: str, expected: str) -> None:
    """Metrics keys are 16+ characters, no placeholder, and never an API key too."""
    (problem,) = refusal(GOOD_ENV | {"OTP_METRICS_KEYS": keys})
    assert problem.startswith(expected)
    assert GOOD_ENV["OTP_API_KEYS"] not in problem


def test_a_metrics_key_held_by_a_file_tenant_is_refused(tmp_path: Path) -> None:
    """A metrics key that is some tenant's API key (by its hash in the tenants file) is refused too."""
    path = tenants_file(tmp_path, f'[tenants.shop]\napi_keys = ["{hash_api_key(SHOP_KEY)}"]\n')
    (problem,) = refusal(GOOD_ENV | {"OTP_TENANTS_FILE": path, "OTP_METRICS_KEYS": SHOP_KEY})
    assert problem.startswith("OTP_METRICS_KEYS holds a key that is also an API key")


def test_metrics_keys_are_read() -> None:
    """OTP_METRICS_KEYS holds comma-separated keys of 16+ characters."""
    settings = Settings.from_env(
        GOOD_ENV | {"OTP_METRICS_KEYS": "scrape-0123456789abcdef, scrape-2-0123456789ab"}
    )
    assert settings.metrics_keys == ("scrape-0123456789abcdef", "scrape-2-0123456789ab")


def test_a_setting_with_several_faults_is_one_line() -> None:
    """A caller that is a placeholder and not digits, or a pepper set twice and short, is one line each."""
    problems = refusal(
        GOOD_ENV | {"OTP_AUTOCALL_CALLER": "<caller number>", "OTP_PEPPER": "short", "OTP_PEPPER_FILE": "/x"}
    )
    assert [problem.split()[0] for problem in problems] == ["OTP_AUTOCALL_CALLER", "OTP_PEPPER"]


def test_a_misspelt_setting_is_pointed_at() -> None:
    """A required setting that is missing names a close misspelling; other misspellings become notices."""
    (problem,) = refusal(without(GOOD_ENV, "OTP_PEPPER") | {"OTP_PEPER": "pQ7xK2vN9mW4rT8zL3bY6cH1dF5gJ0sA"})
    assert problem == "OTP_PEPPER is required (OTP_PEPER is set: misspelt?)"
    settings = Settings.from_env(
        GOOD_ENV | {"OTP_LOG_LEVLE": "DEBUG", "OTP_PUBLIC_URL_FILE": "/x", "OTP_PORT": "tcp://10.0.0.1:80"}
    )
    assert settings.notices == (
        "OTP_LOG_LEVLE is not a setting: did you mean OTP_LOG_LEVEL?",
        "OTP_PUBLIC_URL_FILE is not read: only secrets come from files (OTP_API_KEYS, "
        "OTP_AUTOCALL_SECRET_KEY, OTP_METRICS_KEYS, OTP_PEPPER, OTP_REDIS_URL, OTP_WEBHOOK_SECRET)",
    )


class RecordingEnviron(dict[str, str]):
    """An (empty) environment that notes every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.looked_up: set[str] = set()

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.looked_up.add(name)
        return super().get(name, default)


def settings_read() -> tuple[set[str], set[str]]:
    """The OTP_* settings from_env reads, and those of them it also reads from NAME_FILE."""
    environ = RecordingEnviron()
    refusal(environ)  # production with nothing set: every setting is read, then refused
    names = {name for name in environ.looked_up if name.startswith("OTP_")}
    from_files = {name for name in names if f"{name}_FILE" in names}
    return names - {f"{name}_FILE" for name in from_files}, from_files


def test_serve_help_lists_every_setting() -> None:
    """`serve --help` names every setting from_env reads, marking with * those that may come from a file."""
    names, from_files = settings_read()
    assert from_files == set(SECRETS_IN_FILES)
    help_text = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200).output
    listed = re.findall(r"^ +(OTP_[A-Z0-9_]+)(\*?) ", help_text, re.MULTILINE)
    assert sorted(name for name, _ in listed) == sorted(names)
    assert {name for name, star in listed if star} == from_files


def test_readme_documents_every_setting() -> None:
    """README.md names every setting from_env reads."""
    names, _ = settings_read()
    readme = README.read_text()
    assert sorted(name for name in names if f"`{name}`" not in readme) == []


@pytest.mark.parametrize(
    "url",
    [
        "redis://default:Kp9xQ2vT7mW4#z@10.0.0.5:6379/0",
        "redis://default:[Kp9xQ2vT7mW4]@10.0.0.5:6379/0",
        "redis+sentinel://s1:26379,Kp9xQ2vT7mW4/otp",
    ],
)
def test_a_redis_url_refused_at_start_never_shows_its_password(url: str) -> None:
    """A Redis URL whose password breaks its parsing is refused with a message holding no part of it."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(GOOD_ENV | {"OTP_REDIS_URL": url})
    assert "Kp9xQ2vT7mW4" not in " ".join(refused.value.problems)


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("redis://h:6379/0?password=S3cr3t", "redis://h:6379/0"),
        ("rediss://user:S3cr3t@h:6380/1", "rediss://h:6380/1"),
        ("unix:///run/redis.sock?db=0&password=S3cr3t", "unix:///run/redis.sock"),
    ],
)
def test_the_redis_target_is_logged_without_credentials(url: str, described: str) -> None:
    """The Redis target named in the start's log line holds no user, password or query."""
    assert parse_redis_url(url).describe() == described


@pytest.mark.parametrize(
    "pepper",
    [
        "32+ random bytes, e.g. the output of: openssl rand -base64 48",
        "[32+ random bytes, e.g. the output of: openssl rand -base64 48]",
        "$(head -c 48 /dev/urandom | base64 -w0)",
        "`openssl rand -base64 48`",
        "test-pepper-that-is-long-enough-0123456789",
        "a" * 48,
        "abababababababababababababababab",
    ],
)
def test_production_refuses_a_pepper_that_is_no_secret(pepper: str) -> None:
    """The example's words without their brackets, a command the shell never ran, a value saying it is
    a test, or one of next to no variety is refused as the pepper in production."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(GOOD_ENV | {"OTP_PEPPER": pepper})
    assert any(problem.startswith("OTP_PEPPER holds a placeholder") for problem in refused.value.problems)


def test_production_refuses_a_one_letter_provider_secret_and_a_webhook_secret_of_zeros() -> None:
    """A provider secret of one character and a webhook secret of zero bytes are refused in production."""
    env = GOOD_ENV | {
        "OTP_AUTOCALL_SECRET_KEY": "x",
        "OTP_WEBHOOK_URL": "https://hooks.example.vn/otp",
        "OTP_WEBHOOK_SECRET": "whsec_" + "A" * 32,
    }
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    problems = " ".join(refused.value.problems)
    assert "OTP_AUTOCALL_SECRET_KEY holds a placeholder" in problems
    assert "OTP_WEBHOOK_SECRET must hold random bytes" in problems
