"""Tenants: who may call the API, and how each one overrides the service-wide policy.

Tenants are read from the TOML file named by ``OTP_TENANTS_FILE``. It holds SHA-256 hashes of API
keys, never the keys (``otpservice tenants hash-key`` prints one), and a tenant may list several so
a key can be rotated without downtime. Like :mod:`otpservice.settings`, loading collects every
problem instead of stopping at the first, so an operator can fix the whole file in one pass.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

from otpservice.domain.webhook_endpoints import secret_problem, url_problem

DEFAULT_TENANT = "default"
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

_PREFIX = "OTP_TENANTS_FILE: "
_KEY_HASH = re.compile(r"sha256:[0-9a-fA-F]{64}")
_CALLER = re.compile(r"\+?[0-9]+")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TEXT_FIELDS = ("campaign_id", "caller", "template")
_INTEGER_BOUNDS = {
    "code_length": (4, 10),
    "ttl_seconds": (60, 600),
    "max_attempts": (1, 20),
    "daily_call_cap": (1, 10_000_000),
}
_FIELDS = ("api_keys", *_TEXT_FIELDS, *_INTEGER_BOUNDS, "allow_custom_code", "webhook_url", "webhook_secret")
_HASH_KEY_HINT = "store the line `otpservice tenants hash-key` prints for the key, never the key itself"


@dataclass(frozen=True, slots=True)
class Tenant:
    """One API client: its key hashes and the policy values it overrides (``None``: the service's)."""

    name: str
    key_hashes: tuple[str, ...] = field(default=(), repr=False)  # normalised "sha256:<lowercase hex>"
    campaign_id: str | None = None
    caller: str | None = None
    template: str | None = None
    code_length: int | None = None
    ttl_seconds: int | None = None
    max_attempts: int | None = None
    daily_call_cap: int | None = None
    allow_custom_code: bool = False
    webhook_url: str | None = None  # where its events go (with webhook_secret), if anywhere
    webhook_secret: str | None = field(default=None, repr=False)


def hash_api_key(key: str) -> str:
    """The form in which the tenants file stores an API key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def caller_problem(caller: str) -> str | None:
    """Why CALLER cannot be a caller number (OTP_AUTOCALL_CALLER or a tenant's caller), or None."""
    if _CALLER.fullmatch(caller) and 3 <= len(caller) <= 20:
        return None
    return "must be 3 to 20 characters, digits with an optional leading +"


def load_tenants_file(path: Path) -> tuple[tuple[Tenant, ...], list[str]]:
    """Tenants read from the file, and every problem found (one line each; empty when valid).

    A tenant whose entry has a problem is left out, so the tenants are only complete when there
    are no problems; the caller must refuse to start otherwise.
    """
    try:
        document = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        return (), [f"{_PREFIX}cannot read {path}: {error.strerror or error}"]
    except UnicodeDecodeError as error:
        return (), [f"{_PREFIX}{path} is not UTF-8: {error}"]
    except tomllib.TOMLDecodeError as error:
        return (), [f"{_PREFIX}{path} is not valid TOML: {_one_line(str(error))}"]

    problems = [
        f"unknown top-level key {_place('', key)}: the file holds only the [tenants] table"
        for key in document
        if key != "tenants"
    ]
    table = document.get("tenants")
    tenants: list[Tenant] = []
    read: list[Tenant] = []  # flawed ones too, so a shared key is still reported alongside their flaws
    if table is None:
        problems.append("tenants is missing: declare each tenant as a [tenants.NAME] table")
    elif not isinstance(table, dict):
        problems.append(f"tenants must be a table of [tenants.NAME] tables, got {_toml_type(table)}")
    elif not table:
        problems.append("tenants has no tenant: declare at least one [tenants.NAME] table")
    else:
        for name, entry in table.items():
            problems_before = len(problems)
            tenant = _read_tenant(name, entry, problems)
            if tenant is not None:
                read.append(tenant)
                if len(problems) == problems_before:
                    tenants.append(tenant)
    return tuple(tenants), [_PREFIX + problem for problem in problems] + check_tenants(read)


def check_tenants(tenants: Iterable[Tenant]) -> list[str]:
    """Problems across tenants: duplicate key hashes (naming both tenants), duplicate names."""
    problems: list[str] = []
    names: set[str] = set()
    key_places: dict[str, str] = {}
    for tenant in tenants:
        place = _place("tenants", tenant.name)
        if tenant.name in names:
            problems.append(f"{_PREFIX}{place}: more than one tenant has this name")
        names.add(tenant.name)
        for index, key_hash in enumerate(tenant.key_hashes):
            key_place = f"{place}.api_keys[{index}]"
            if key_hash in key_places:
                # One key must identify one tenant; a repeat within a tenant is a botched rotation.
                problems.append(f"{_PREFIX}{key_place} is the same key as {key_places[key_hash]}")
            else:
                key_places[key_hash] = key_place
    return problems


class TenantDirectory:
    """The tenants by name and by API key; refuses tenants that :func:`check_tenants` rejects."""

    __slots__ = ("_by_key_hash", "_by_name")

    def __init__(self, tenants: Iterable[Tenant]):
        tenants = tuple(tenants)
        problems = check_tenants(tenants)
        if problems:
            # An ambiguous key would let one tenant act as another; there is no safe choice.
            raise ValueError("\n".join(problems))
        self._by_name = {tenant.name: tenant for tenant in tenants}
        self._by_key_hash = {key_hash: tenant for tenant in tenants for key_hash in tenant.key_hashes}

    def for_key(self, presented_key: str) -> Tenant | None:
        """The tenant the key belongs to, or ``None``."""
        if not presented_key:
            return None
        # The lookup's timing depends on the hash of the presented key, which reveals nothing
        # an attacker could use to approach a stored key, so no constant-time compare is needed.
        return self._by_key_hash.get(hash_api_key(presented_key))

    def __iter__(self) -> Iterator[Tenant]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> Tenant | None:
        """The tenant called NAME, or ``None``."""
        return self._by_name.get(name)


def _read_tenant(name: str, entry: object, problems: list[str]) -> Tenant | None:
    """The tenant in ENTRY with its flawed settings left out (their problems added), if it is a table."""
    place = _place("tenants", name)
    if not TENANT_NAME.fullmatch(name):
        problems.append(f"{place}: a tenant name is 1 to 32 of a-z, 0-9, _ and -, not starting with _ or -")
    if not isinstance(entry, dict):
        problems.append(f"{place} must be a table, got {_toml_type(entry)}")
        return None
    problems += [
        f"{_place(place, key)} is not a tenant setting (known: {', '.join(_FIELDS)})"
        for key in entry
        if key not in _FIELDS
    ]
    allow_custom_code = entry.get("allow_custom_code", False)
    if not isinstance(allow_custom_code, bool):
        problems.append(
            f"{place}.allow_custom_code must be true or false, got {_toml_type(allow_custom_code)}"
        )
    return Tenant(
        name=name,
        key_hashes=_key_hashes(place, entry.get("api_keys"), problems),
        campaign_id=_text(place, "campaign_id", entry, problems),
        caller=_text(place, "caller", entry, problems),
        template=_text(place, "template", entry, problems),
        code_length=_integer(place, "code_length", entry, problems),
        ttl_seconds=_integer(place, "ttl_seconds", entry, problems),
        max_attempts=_integer(place, "max_attempts", entry, problems),
        daily_call_cap=_integer(place, "daily_call_cap", entry, problems),
        allow_custom_code=isinstance(allow_custom_code, bool) and allow_custom_code,
        **_webhook(place, entry, problems),
    )


def _webhook(place: str, entry: Mapping[str, object], problems: list[str]) -> dict[str, str]:
    """webhook_url and webhook_secret: both or neither, each valid (the secret is never echoed)."""
    url, secret = entry.get("webhook_url"), entry.get("webhook_secret")
    if url is None and secret is None:
        return {}
    if url is None or secret is None:
        problems.append(f"{place}: webhook_url and webhook_secret go together")
        return {}
    if not isinstance(url, str) or not isinstance(secret, str):
        problems.append(f"{place}: webhook_url and webhook_secret must be strings")
        return {}
    found = [
        f"{place}.{name} {problem}"
        for name, problem in (("webhook_url", url_problem(url)), ("webhook_secret", secret_problem(secret)))
        if problem
    ]
    problems += found
    return {} if found else {"webhook_url": url, "webhook_secret": secret}


def _key_hashes(place: str, value: object, problems: list[str]) -> tuple[str, ...]:
    place += ".api_keys"
    if value is None:
        problems.append(f"{place} is required: a list of key hashes; {_HASH_KEY_HINT}")
        return ()
    if not isinstance(value, list) or not value:
        got = "an empty array" if isinstance(value, list) else _toml_type(value)
        problems.append(f"{place} must be a non-empty array of key hashes, got {got}")
        return ()
    key_hashes = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            problems.append(f"{place}[{index}] must be a string, got {_toml_type(item)}")
        elif not _KEY_HASH.fullmatch(item):
            # Never echo it: what is not a hash may well be a live key.
            problems.append(f'{place}[{index}] is not "sha256:" and 64 hex digits; {_HASH_KEY_HINT}')
        else:
            key_hashes.append(item.lower())
    return tuple(key_hashes)


def _text(place: str, key: str, entry: Mapping[str, object], problems: list[str]) -> str | None:
    value = entry.get(key)
    place = f"{place}.{key}"
    if value is None:
        return None
    if not isinstance(value, str):
        quote_hint = " (quote it)" if isinstance(value, int | float) and not isinstance(value, bool) else ""
        problems.append(f"{place} must be a string, got {_toml_type(value)}{quote_hint}")
    elif not value.strip():
        problems.append(f"{place} must not be empty")
    elif key == "caller" and (problem := caller_problem(value)):
        problems.append(f"{place} {problem}, got {json.dumps(value)}")
    else:
        return value
    return None


def _integer(place: str, key: str, entry: Mapping[str, object], problems: list[str]) -> int | None:
    value = entry.get(key)
    place = f"{place}.{key}"
    low, high = _INTEGER_BOUNDS[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):  # bool: TOML's true is not a number
        problems.append(f"{place} must be an integer, got {_toml_type(value)}")
    elif not low <= value <= high:
        problems.append(f"{place} must be between {low} and {high}, got {value}")
    else:
        return value
    return None


def _place(parent: str, key: str) -> str:
    """The dotted TOML path to KEY, quoted when it is not a bare key (so it stays on one line)."""
    shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{parent}.{shown}" if parent else shown


def _toml_type(value: object) -> str:
    # bool before int, datetime before date: each is a subclass of the next.
    for kind, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
        (datetime, "a date-time"),
        (date, "a date"),
        (time, "a time"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())
