"""Settings: production refuses to start on missing or placeholder secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from otpservice.domain.limits import Limit
from otpservice.settings import Settings, SettingsError
from otpservice.tenants import DEFAULT_TENANT, Tenant, hash_api_key

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
