"""Tenants file: loading, validation that reports every problem, key lookup and ``tenants hash-key``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from otpservice.cli import main
from otpservice.tenants import (
    DEFAULT_TENANT,
    Tenant,
    TenantDirectory,
    check_tenants,
    hash_api_key,
    load_tenants_file,
)

SHOP_KEY = "k_live_shop_0123456789abcdef"
SHOP_NEXT_KEY = "k_live_shop_fedcba9876543210"
BANK_KEY = "k_live_bank_0123456789abcdef"
ABC_HASH = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256(b"abc")


def load(tmp_path: Path, text: str) -> tuple[tuple[Tenant, ...], list[str]]:
    path = tmp_path / "tenants.toml"
    path.write_text(text, encoding="utf-8")
    return load_tenants_file(path)


def shop(body: str = "") -> str:
    """A [tenants.shop] table with a valid key and BODY."""
    return f'[tenants.shop]\napi_keys = ["{hash_api_key(SHOP_KEY)}"]\n{body}\n'


def only_problem(tmp_path: Path, text: str) -> str:
    _, problems = load(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].startswith("OTP_TENANTS_FILE: ")
    assert "\n" not in problems[0]
    return problems[0]


def test_hash_api_key_is_prefixed_sha256() -> None:
    """A key is stored as "sha256:" and the lower-case hex SHA-256 of its UTF-8 bytes."""
    assert hash_api_key("abc") == ABC_HASH


def test_file_with_every_field_loads(tmp_path: Path) -> None:
    """Every setting of a tenant is read, and upper-case hex in a key hash is normalised."""
    shop_next_hash = hash_api_key(SHOP_NEXT_KEY)
    tenants, problems = load(
        tmp_path,
        f"""
        [tenants.shop]
        api_keys = ["{hash_api_key(SHOP_KEY)}", "sha256:{shop_next_hash.removeprefix("sha256:").upper()}"]
        campaign_id = "12"
        caller = "02873000000"
        template = "template_otp_shop"
        code_length = 8
        ttl_seconds = 120
        max_attempts = 3
        daily_call_cap = 5000
        allow_custom_code = true

        [tenants.bank-2]
        api_keys = ["{hash_api_key(BANK_KEY)}"]
        caller = "+842873000000"
        """,
    )
    assert problems == []
    assert tenants == (
        Tenant(
            name="shop",
            key_hashes=(hash_api_key(SHOP_KEY), shop_next_hash),
            campaign_id="12",
            caller="02873000000",
            template="template_otp_shop",
            code_length=8,
            ttl_seconds=120,
            max_attempts=3,
            daily_call_cap=5000,
            allow_custom_code=True,
        ),
        Tenant(name="bank-2", key_hashes=(hash_api_key(BANK_KEY),), caller="+842873000000"),
    )


def test_minimal_tenant_overrides_nothing(tmp_path: Path) -> None:
    """A tenant with only api_keys leaves every policy value to the service."""
    tenants, problems = load(tmp_path, shop())
    assert problems == []
    assert tenants == (Tenant(name="shop", key_hashes=(hash_api_key(SHOP_KEY),)),)
    assert "key_hashes" not in repr(tenants[0])


def test_missing_file_is_one_problem_with_the_reason(tmp_path: Path) -> None:
    """A file that cannot be read yields no tenants and one problem carrying the OS reason."""
    tenants, problems = load_tenants_file(tmp_path / "absent.toml")
    assert tenants == ()
    assert problems == [
        f"OTP_TENANTS_FILE: cannot read {tmp_path / 'absent.toml'}: No such file or directory"
    ]


def test_invalid_toml_is_one_problem_with_the_parser_message(tmp_path: Path) -> None:
    """Malformed TOML yields one problem quoting tomllib's message, position included."""
    problem = only_problem(tmp_path, "[tenants.shop]\ncode_length = six\n")
    assert "is not valid TOML" in problem
    assert "(at line 2, column 15)" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "tenants is missing"),
        ("tenants = 5", "tenants must be a table of [tenants.NAME] tables, got an integer"),
        ("[tenants]", "tenants has no tenant"),
        (
            shop() + "[settings]\nx = 1",
            "unknown top-level key settings: the file holds only the [tenants] table",
        ),
    ],
    ids=["missing", "not-a-table", "empty", "unknown-top-level-key"],
)
def test_top_level_holds_only_a_non_empty_tenants_table(tmp_path: Path, text: str, expected: str) -> None:
    """The file's top level must be exactly one [tenants] table with at least one tenant."""
    assert expected in only_problem(tmp_path, text)


@pytest.mark.parametrize(
    ("toml_name", "shown"),
    [
        ("Shop", "tenants.Shop"),
        ("_shop", "tenants._shop"),
        ("a" * 33, "tenants." + "a" * 33),
        ('"shop\\n"', 'tenants."shop\\n"'),
        ('"my shop"', 'tenants."my shop"'),
    ],
    ids=["upper-case", "leading-underscore", "too-long", "trailing-newline", "space"],
)
def test_tenant_name_must_match_the_pattern(tmp_path: Path, toml_name: str, shown: str) -> None:
    """A tenant name outside TENANT_NAME is refused, shown on one line even when it holds a newline."""
    text = f'[tenants.{toml_name}]\napi_keys = ["{hash_api_key(SHOP_KEY)}"]\n'
    tenants, problems = load(tmp_path, text)
    assert tenants == ()
    assert problems == [
        f"OTP_TENANTS_FILE: {shown}: a tenant name is 1 to 32 of a-z, 0-9, _ and -, not starting with _ or -"
    ]


def test_tenant_entry_must_be_a_table(tmp_path: Path) -> None:
    """A tenant given as a plain value instead of a table is refused."""
    problem = only_problem(tmp_path, "[tenants]\nshop = 5\n")
    assert problem == "OTP_TENANTS_FILE: tenants.shop must be a table, got an integer"


def test_unknown_tenant_key_is_named(tmp_path: Path) -> None:
    """A key a tenant does not know is named without echoing its value."""
    problem = only_problem(tmp_path, shop('sms_secret = "very_secret"'))
    assert problem.startswith("OTP_TENANTS_FILE: tenants.shop.sms_secret is not a tenant setting")
    assert "very_secret" not in problem


@pytest.mark.parametrize(
    ("api_keys", "expected"),
    [
        (None, "tenants.shop.api_keys is required"),
        ("[]", "tenants.shop.api_keys must be a non-empty array of key hashes, got an empty array"),
        (
            f'"{hash_api_key(SHOP_KEY)}"',
            "tenants.shop.api_keys must be a non-empty array of key hashes, got a string",
        ),
        ("[12]", "tenants.shop.api_keys[0] must be a string, got an integer"),
        ('["sha256:abcd"]', 'tenants.shop.api_keys[0] is not "sha256:" and 64 hex digits'),
        (f'["{hash_api_key(SHOP_KEY).replace("sha256:", "md5:")}"]', "tenants.shop.api_keys[0] is not"),
    ],
    ids=["missing", "empty", "not-an-array", "not-a-string", "short-hash", "other-algorithm"],
)
def test_api_keys_must_be_key_hashes(tmp_path: Path, api_keys: str | None, expected: str) -> None:
    """api_keys is required and must be a non-empty array of "sha256:<64 hex>" strings."""
    text = "[tenants.shop]\n" + (f"api_keys = {api_keys}\n" if api_keys is not None else 'template = "t"\n')
    assert expected in only_problem(tmp_path, text)


def test_raw_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    """A raw key in api_keys points at `otpservice tenants hash-key` and never appears in the problem."""
    problem = only_problem(tmp_path, f'[tenants.shop]\napi_keys = ["{SHOP_KEY}"]\n')
    assert "otpservice tenants hash-key" in problem
    assert SHOP_KEY not in problem
    assert "k_live" not in problem


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ('campaign_id = ""', "tenants.shop.campaign_id must not be empty"),
        ("campaign_id = 12", "tenants.shop.campaign_id must be a string, got an integer (quote it)"),
        ('template = "  "', "tenants.shop.template must not be empty"),
        ("template = true", "tenants.shop.template must be a string, got a boolean"),
        ('caller = "028-730"', "tenants.shop.caller must be 3 to 20 characters, digits with an optional"),
        ('caller = "02"', "tenants.shop.caller must be 3 to 20 characters"),
        (f'caller = "{"1" * 21}"', "tenants.shop.caller must be 3 to 20 characters"),
        ('caller = "+"', "tenants.shop.caller must be 3 to 20 characters"),
        ("code_length = 3", "tenants.shop.code_length must be between 4 and 10, got 3"),
        ("code_length = 11", "tenants.shop.code_length must be between 4 and 10, got 11"),
        ("code_length = true", "tenants.shop.code_length must be an integer, got a boolean"),
        ("code_length = 6.0", "tenants.shop.code_length must be an integer, got a float"),
        ('code_length = "6"', "tenants.shop.code_length must be an integer, got a string"),
        ("ttl_seconds = 59", "tenants.shop.ttl_seconds must be between 60 and 600, got 59"),
        ("ttl_seconds = 601", "tenants.shop.ttl_seconds must be between 60 and 600, got 601"),
        ("max_attempts = 0", "tenants.shop.max_attempts must be between 1 and 20, got 0"),
        ("max_attempts = 21", "tenants.shop.max_attempts must be between 1 and 20, got 21"),
        ("daily_call_cap = 0", "tenants.shop.daily_call_cap must be between 1 and 10000000, got 0"),
        ("daily_call_cap = 10_000_001", "tenants.shop.daily_call_cap must be between 1 and 10000000, got"),
        ('allow_custom_code = "yes"', "tenants.shop.allow_custom_code must be true or false, got a string"),
        ("allow_custom_code = 1", "tenants.shop.allow_custom_code must be true or false, got an integer"),
    ],
)
def test_bad_setting_is_named_with_its_rule(tmp_path: Path, setting: str, expected: str) -> None:
    """Each out-of-rule override is one problem naming the setting, the rule and, if harmless, the value."""
    tenants, problems = load(tmp_path, shop(setting))
    assert tenants == ()
    assert len(problems) == 1, problems
    assert problems[0].startswith("OTP_TENANTS_FILE: " + expected)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Problems in several settings and tenants, and a key shared with a flawed tenant, come at once."""
    tenants, problems = load(
        tmp_path,
        f"""
        owner = "ops"
        [tenants.shop]
        api_keys = ["{SHOP_KEY}"]
        code_length = 3
        colour = "blue"
        [tenants.Bank]
        api_keys = ["{hash_api_key(BANK_KEY)}", "{hash_api_key(SHOP_NEXT_KEY)}"]
        max_attempts = 0
        [tenants.ok]
        api_keys = ["{hash_api_key(SHOP_NEXT_KEY)}"]
        """,
    )
    assert [tenant.name for tenant in tenants] == ["ok"]
    assert len(problems) == 7, problems
    for place in (
        "owner",
        "tenants.shop.api_keys[0]",
        "tenants.shop.code_length",
        "tenants.shop.colour",
        "tenants.Bank:",
        "tenants.Bank.max_attempts",
        "tenants.ok.api_keys[0] is the same key as tenants.Bank.api_keys[1]",
    ):
        assert sum(place in problem for problem in problems) == 1, (place, problems)
    assert all(p.startswith("OTP_TENANTS_FILE: ") and "\n" not in p for p in problems)


def test_key_shared_by_two_tenants_is_refused(tmp_path: Path) -> None:
    """One key hash under two tenants is a problem naming both places."""
    _, problems = load(tmp_path, shop() + f'[tenants.bank]\napi_keys = ["{hash_api_key(SHOP_KEY)}"]\n')
    assert problems == [
        "OTP_TENANTS_FILE: tenants.bank.api_keys[0] is the same key as tenants.shop.api_keys[0]"
    ]


def test_key_repeated_within_a_tenant_is_refused(tmp_path: Path) -> None:
    """The same key hash twice in one tenant is a problem, even when the hex differs only in case."""
    key_hash = hash_api_key(SHOP_KEY)
    upper = "sha256:" + key_hash.removeprefix("sha256:").upper()
    _, problems = load(tmp_path, f'[tenants.shop]\napi_keys = ["{key_hash}", "{upper}"]\n')
    assert problems == [
        "OTP_TENANTS_FILE: tenants.shop.api_keys[1] is the same key as tenants.shop.api_keys[0]"
    ]


def test_check_tenants_covers_tenants_built_elsewhere() -> None:
    """A default tenant from OTP_API_KEYS clashing with the file by name or by key is reported."""
    file_tenants = (
        Tenant(name=DEFAULT_TENANT, key_hashes=(hash_api_key(BANK_KEY),)),
        Tenant(name="shop", key_hashes=(hash_api_key(SHOP_KEY),)),
    )
    from_env = Tenant(name=DEFAULT_TENANT, key_hashes=(hash_api_key("k_other"), hash_api_key(SHOP_KEY)))
    assert check_tenants([*file_tenants, from_env]) == [
        "OTP_TENANTS_FILE: tenants.default: more than one tenant has this name",
        "OTP_TENANTS_FILE: tenants.default.api_keys[1] is the same key as tenants.shop.api_keys[0]",
    ]
    assert check_tenants(file_tenants) == []


def test_directory_finds_the_tenant_for_either_rotation_key(tmp_path: Path) -> None:
    """Both of a tenant's keys find it; an unknown, empty or hash-valued key finds nothing."""
    tenants, problems = load(
        tmp_path,
        f"""
        [tenants.shop]
        api_keys = ["{hash_api_key(SHOP_KEY)}", "{hash_api_key(SHOP_NEXT_KEY)}"]
        [tenants.bank]
        api_keys = ["{hash_api_key(BANK_KEY)}"]
        """,
    )
    assert problems == []
    directory = TenantDirectory(tenants)
    shop_tenant = directory.get("shop")
    assert shop_tenant is not None
    assert directory.for_key(SHOP_KEY) is shop_tenant
    assert directory.for_key(SHOP_NEXT_KEY) is shop_tenant
    assert directory.for_key(BANK_KEY) is directory.get("bank")
    assert directory.for_key("k_live_unknown_0123456789") is None
    assert directory.for_key("") is None
    assert directory.for_key(hash_api_key(SHOP_KEY)) is None  # the stored hash is not itself a key
    assert directory.get("nobody") is None
    assert len(directory) == 2
    assert [tenant.name for tenant in directory] == ["shop", "bank"]


def test_directory_refuses_an_ambiguous_key() -> None:
    """A directory is never built from tenants that share a key, since either could be meant."""
    key_hash = hash_api_key(SHOP_KEY)
    with pytest.raises(ValueError, match=r"tenants\.bank\.api_keys\[0\] is the same key"):
        TenantDirectory(
            [Tenant(name="shop", key_hashes=(key_hash,)), Tenant(name="bank", key_hashes=(key_hash,))]
        )


def test_hash_key_reads_standard_input() -> None:
    """`otpservice tenants hash-key` hashes the key piped to it, trailing newline stripped."""
    result = CliRunner().invoke(main, ["tenants", "hash-key"], input="  abc\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == ABC_HASH + "\n"


def test_hash_key_takes_the_key_option() -> None:
    """`otpservice tenants hash-key --key KEY` prints the line to put in api_keys."""
    result = CliRunner().invoke(main, ["tenants", "hash-key", "--key", SHOP_KEY])
    assert result.exit_code == 0, result.output
    assert result.stdout == hash_api_key(SHOP_KEY) + "\n"


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        ([], "", "the key is empty"),
        ([], " \n\n", "the key is empty"),
        (["--key", ""], "", "the key is empty"),
        ([], "abc\ndef\n", "the key spans several lines"),
    ],
    ids=["empty-input", "blank-input", "empty-option", "two-lines"],
)
def test_hash_key_refuses_an_empty_key(args: list[str], stdin: str, expected: str) -> None:
    """An empty (or multi-line) key is a usage error, exit status 2, with nothing on stdout."""
    result = CliRunner().invoke(main, ["tenants", "hash-key", *args], input=stdin)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert expected in result.stderr
