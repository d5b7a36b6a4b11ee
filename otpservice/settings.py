"""Settings, loaded once from the environment (or ``*_FILE`` files) and injected everywhere else.

Every secret may come from ``OTP_X`` or from a file named by ``OTP_X_FILE`` (Docker and Kubernetes
secrets), not both. Reading collects every problem, at most one line per setting, so an operator
fixes the whole environment in one pass: a value still holding a placeholder (``<API_HOST>``,
``changeme``, ``REPLACE_ME``, ``your-...``, a host reserved for documentation), a value the service
cannot read, and in production a missing or weak secret.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, urlsplit

import phonenumbers

from otpservice.cpus import usable_cores as usable_cores  # re-exported: `serve` splits it between workers
from otpservice.domain.limits import Limit, Limits, parse_limits
from otpservice.domain.webhook_endpoints import is_loopback, secret_problem, url_problem
from otpservice.redis_url import parse_redis_url
from otpservice.tenants import (
    DEFAULT_TENANT,
    Tenant,
    caller_problem,
    check_tenants,
    hash_api_key,
    load_tenants_file,
)

Mode = Literal["production", "dev"]

# Every setting, grouped as `serve --help` lists them; `*` marks those that may come from NAME_FILE.
_SETTINGS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Required in production",
        (
            ("OTP_REDIS_URL*", "redis://host:6379/0; rediss, unix, +sentinel, +cluster"),
            ("OTP_API_KEYS*", "client API keys, comma-separated, 16+ characters"),
            ("OTP_TENANTS_FILE", "or: a TOML file of tenants and their key hashes"),
            ("OTP_PEPPER*", "32+ secret bytes keying code hashes and callbacks"),
            ("OTP_PUBLIC_URL", "where the provider calls back: https (http on loopback)"),
            ("OTP_AUTOCALL_URL", "Autocall API base URL: https preferred (http warned about)"),
            ("OTP_AUTOCALL_SECRET_KEY*", "the Autocall account's secret key"),
            ("OTP_AUTOCALL_CAMPAIGN_ID", "the OTP campaign"),
            ("OTP_AUTOCALL_CALLER", "caller number shown to users: digits, optional +"),
        ),
    ),
    (
        "Codes and calls",
        (
            ("OTP_AUTOCALL_TEMPLATE", "the OTP script (template_otp_1)"),
            ("OTP_AUTOCALL_CONNECT_TIMEOUT_SECONDS", "provider connect timeout (3)"),
            ("OTP_AUTOCALL_READ_TIMEOUT_SECONDS", "provider read timeout (10)"),
            ("OTP_CODE_LENGTH", "digits per code, 4-10 (6)"),
            ("OTP_TTL_SECONDS", "lifetime of a code, 60-600 (300)"),
            ("OTP_MAX_ATTEMPTS", "wrong codes per verification (5)"),
            ("OTP_RESEND_COOLDOWN_SECONDS", "time between calls of one verification (30)"),
            ("OTP_MAX_SENDS", "calls per verification (5)"),
            ("OTP_ALLOWED_COUNTRIES", "two-letter regions whose numbers are accepted (VN)"),
        ),
    ),
    (
        "Budgets: COUNT/WINDOW lists such as 3/10m,10/24h, or off",
        (
            ("OTP_PHONE_LIMITS", "calls to one number (3/10m,10/24h)"),
            ("OTP_CLIENT_IP_LIMITS", "calls per end-user address per tenant (10/1h)"),
            ("OTP_PREFIX_LIMITS", "calls to one number range (20/10m)"),
            ("OTP_PHONE_FAILURE_LOCK", "wrong codes that lock a number (10/24h)"),
            ("OTP_DAILY_CALL_CAP", "calls per tenant per UTC day, or off (10000)"),
            ("OTP_GLOBAL_CALLS_PER_MINUTE", "calls of the whole service per minute (off)"),
            ("OTP_PHONE_CALLS_PER_HOUR", "deprecated: read as OTP_PHONE_LIMITS=N/1h"),
        ),
    ),
    (
        "Events",
        (
            ("OTP_WEBHOOK_URL", "where the events of OTP_API_KEYS' tenant go"),
            ("OTP_WEBHOOK_SECRET*", "its Standard Webhooks secret, whsec_<base64>"),
            ("OTP_WEBHOOK_RETRY_HOURS", "retry an undelivered event this long (24)"),
            ("OTP_WEBHOOK_TIMEOUT_SECONDS", "time a receiver may take to answer (10)"),
        ),
    ),
    (
        "Running",
        (
            ("OTP_REDIS_TIMEOUT_SECONDS", "a storage command's time to connect and answer (1)"),
            ("OTP_RETENTION_SECONDS", "how long an ended verification stays readable (86400)"),
            ("OTP_RECONCILE_AFTER_SECONDS", "ask the provider about a call silent this long (90)"),
            ("OTP_RECONCILE_INTERVAL_SECONDS", "how often overdue calls are looked for (10)"),
            ("OTP_RECONCILE_GIVE_UP_SECONDS", "stop asking about a call after this (3600)"),
            ("OTP_ARGON2_TIME_COST", "argon2id passes (2)"),
            ("OTP_ARGON2_MEMORY_KIB", "argon2id memory (19456)"),
            ("OTP_ARGON2_PARALLELISM", "argon2id lanes (1)"),
            ("OTP_HASH_WORKERS", "hash threads per process (CPUs allowed / --workers)"),
            ("OTP_HASH_QUEUE", "checks that may wait for a hash thread, per process (auto: ~250 ms)"),
            ("OTP_CLIENT_TIMEOUT_SECONDS", "a request's head and body must arrive within this (10)"),
            ("OTP_METRICS_KEYS*", "keys that may read /metrics only, 16+ characters"),
            ("OTP_DOCS", "serve /docs, /docs/openapi.json and .yaml: true or false (true)"),
            ("OTP_LOG_LEVEL", "DEBUG, INFO, WARNING, ERROR or CRITICAL (INFO)"),
            ("OTP_LOG_JSON", "JSON log lines: true or false (true)"),
        ),
    ),
)
_SECRETS = frozenset(name.rstrip("*") for _, group in _SETTINGS for name, _ in group if name.endswith("*"))
_KNOWN_NAMES = frozenset(
    {name.rstrip("*") for _, group in _SETTINGS for name, _ in group} | {f"{name}_FILE" for name in _SECRETS}
)

# Text standing for a value still to be filled in, anywhere in a value that is not secret: <API_HOST>,
# {API_HOST}, ${HOST}, your-..., changeme, replace-with-..., insert-key-here, TODO, xxx. Secrets are
# only checked whole (a random secret may hold brackets), and for the words, which random text does
# not hold between separators: "REPLACE_ME" is refused, "k9replacemeQ" is not.
_TEMPLATE_MARK = re.compile(r"<[^<>]*>|\$?\{[^{}]*\}")
_WORD_MARK = re.compile(
    r"(?<![a-z0-9])(?:your[-_ ][a-z0-9]*"
    r"|(?:(?:change|replace|fill|set|fix)[-_ ]?me|replace[-_ ]?(?:this|with)|changeit|placeholder|todo|tbd"
    # at most four words between, each closed by a separator: no backtracking blow-up on long values
    r"|(?:insert|paste|put)[-_ ]?(?:[a-z0-9]+[-_ ]){0,4}here|goes[-_ ]here|x{3,}|\.{3})(?![a-z0-9]))",
    re.IGNORECASE,
)
_STAND_IN = re.compile(
    # replaceme1 and fixme! are stand-ins, while replacement-... and setmenu... may be real values
    r"change[-_ ]?me.*|(?:replace|fill|set|fix)[-_ ]?me(?:[^a-z].*)?|replace|changeit|placeholder"
    r"|secret|password|todo|tbd|xxx+|\.\.\.|<.*>|\$?\{.*\}|your[-_ ].*|example.*|sample.*|dummy.*|test",
    re.IGNORECASE,
)
# Names RFC 2606 reserves for documentation: no service answers there.
_DOCUMENTATION_DOMAINS = ("example.com", "example.net", "example.org", "example", "invalid")
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MIN_KEY_LENGTH = 16
_MIN_PEPPER_BYTES = 32


class SettingsError(ValueError):
    """The environment does not describe a runnable service; the message names every problem."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))
        self.problems = problems


# Regions whose numbers the provider can be given: its API takes callees in Vietnamese national
# format ("0" and nine digits), and whether it dials +CC numbers is not documented. A number of
# another region, formatted nationally, is some Vietnamese subscriber's number.
DIALLED_REGIONS = ("VN",)


@dataclass(frozen=True, slots=True)
class AutocallSettings:
    """How to reach the provider's Autocall API."""

    url: str = "http://127.0.0.1:8090"
    secret_key: str = field(default="", repr=False)
    campaign_id: str = "1"
    caller: str = ""
    template: str = "template_otp_1"
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 10.0

    @property
    def exchange_bound_seconds(self) -> float:
        """The longest one exchange with the provider may take: a connect, its one retry, a read.
        The client's timeouts bound each phase only (an answer trickled a byte at a time passes
        every read timeout), so callers bound the whole exchange by this."""
        return 2 * self.connect_timeout_seconds + self.read_timeout_seconds


@dataclass(frozen=True, slots=True)
class Argon2Settings:
    """argon2id cost; the defaults are the OWASP minimum (m=19 MiB, t=2, p=1)."""

    time_cost: int = 2
    memory_cost_kib: int = 19 * 1024
    parallelism: int = 1


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service reads from its environment."""

    mode: Mode = "production"
    redis_url: str = ""
    redis_timeout_seconds: float = 1.0
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    pepper: bytes = field(default=b"", repr=False)
    public_url: str = ""
    autocall: AutocallSettings = AutocallSettings()
    argon2: Argon2Settings = Argon2Settings()
    code_length: int = 6
    ttl_seconds: int = 300
    max_attempts: int = 5
    resend_cooldown_seconds: int = 30
    max_sends: int = 5
    # Abuse and cost budgets (README, "Abuse and cost protection"); () is no limit.
    phone_limits: Limits = (Limit(3, 600_000), Limit(10, 86_400_000))
    client_ip_limits: Limits = (Limit(10, 3_600_000),)
    prefix_limits: Limits = (Limit(20, 600_000),)
    failure_lock: Limits = (Limit(10, 86_400_000),)
    daily_call_cap: int | None = 10_000
    global_calls_per_minute: int | None = None
    webhook_url: str = ""  # the default tenant's receiver (tenants have their own)
    webhook_secret: str = field(default="", repr=False)
    webhook_retry_hours: float = 24.0
    webhook_timeout_seconds: float = 10.0
    tenants_file: str = ""
    tenants: tuple[Tenant, ...] = ()  # from OTP_TENANTS_FILE; OTP_API_KEYS adds "default"
    notices: tuple[str, ...] = ()  # deprecated or misspelt settings in use, logged at start
    retention_seconds: int = 86400
    reconcile_after_seconds: int = 90
    reconcile_interval_seconds: float = 10.0
    reconcile_give_up_seconds: int = 3600
    allowed_countries: tuple[str, ...] = ("VN",)
    hash_workers: int = field(default_factory=usable_cores)
    hash_queue: int | None = None  # checks waiting for a hash thread before /verify sheds; None: ~250 ms
    log_level: str = "INFO"
    log_json: bool = True
    docs: bool = True  # /docs, /docs/openapi.json and /docs/openapi.yaml (OTP_DOCS)
    metrics_keys: tuple[str, ...] = field(default=(), repr=False)  # may read /metrics and nothing else
    client_timeout_seconds: float = 10.0  # a request's head and body must arrive within this

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, mode: Mode = "production") -> Settings:
        """Read every ``OTP_*`` variable; raise :class:`SettingsError` listing all problems at once."""
        env = _EnvReader(os.environ if environ is None else environ, production=mode == "production")
        env.note_unknown_names()
        ac, a2 = AutocallSettings(), Argon2Settings()
        autocall = AutocallSettings(
            url=env.provider_url("OTP_AUTOCALL_URL", ac.url),
            secret_key=env.secret("OTP_AUTOCALL_SECRET_KEY", required=True),
            campaign_id=env.text("OTP_AUTOCALL_CAMPAIGN_ID", ac.campaign_id, required=True),
            caller=env.caller("OTP_AUTOCALL_CALLER"),
            template=env.text("OTP_AUTOCALL_TEMPLATE", ac.template),
            connect_timeout_seconds=env.number("OTP_AUTOCALL_CONNECT_TIMEOUT_SECONDS", 3.0, 0.1, 60),
            read_timeout_seconds=env.number("OTP_AUTOCALL_READ_TIMEOUT_SECONDS", 10.0, 0.1, 120),
        )
        argon2 = Argon2Settings(
            time_cost=env.integer("OTP_ARGON2_TIME_COST", a2.time_cost, 1, 20),
            memory_cost_kib=env.integer("OTP_ARGON2_MEMORY_KIB", a2.memory_cost_kib, 8, 4 * 1024**2),
            parallelism=env.integer("OTP_ARGON2_PARALLELISM", a2.parallelism, 1, 16),
        )
        settings = cls(
            mode=mode,
            redis_url=env.redis_url("OTP_REDIS_URL"),
            redis_timeout_seconds=env.number("OTP_REDIS_TIMEOUT_SECONDS", 1.0, 0.05, 30),
            api_keys=env.keys("OTP_API_KEYS"),
            pepper=env.secret("OTP_PEPPER", required=True, min_length=_MIN_PEPPER_BYTES).encode(),
            public_url=env.url("OTP_PUBLIC_URL", "", "callback URLs carry per-call credentials"),
            autocall=autocall,
            argon2=argon2,
            code_length=env.integer("OTP_CODE_LENGTH", 6, 4, 10),
            ttl_seconds=env.integer("OTP_TTL_SECONDS", 300, 60, 600),
            max_attempts=env.integer("OTP_MAX_ATTEMPTS", 5, 1, 20),
            resend_cooldown_seconds=env.integer("OTP_RESEND_COOLDOWN_SECONDS", 30, 0, 3600),
            max_sends=env.integer("OTP_MAX_SENDS", 5, 1, 20),
            phone_limits=env.phone_limits(),
            client_ip_limits=env.limits("OTP_CLIENT_IP_LIMITS", "10/1h"),
            prefix_limits=env.limits("OTP_PREFIX_LIMITS", "20/10m"),
            failure_lock=env.limits("OTP_PHONE_FAILURE_LOCK", "10/24h"),
            daily_call_cap=env.optional_integer("OTP_DAILY_CALL_CAP", 10_000, 1, 10_000_000),
            global_calls_per_minute=env.optional_integer("OTP_GLOBAL_CALLS_PER_MINUTE", None, 1, 10_000_000),
            webhook_url=env.raw("OTP_WEBHOOK_URL"),
            webhook_secret=env.secret("OTP_WEBHOOK_SECRET", checked_elsewhere=True),
            webhook_retry_hours=env.number("OTP_WEBHOOK_RETRY_HOURS", 24.0, 0.001, 168),
            # at most 25: a lease (2 x timeout + 5 s) must end within 60 s when its worker dies
            webhook_timeout_seconds=env.number("OTP_WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.5, 25),
            tenants_file=env.text("OTP_TENANTS_FILE", ""),
            tenants=env.tenants("OTP_TENANTS_FILE"),
            retention_seconds=env.integer("OTP_RETENTION_SECONDS", 86400, 60, 30 * 86400),
            reconcile_after_seconds=env.integer("OTP_RECONCILE_AFTER_SECONDS", 90, 0, 86400),
            reconcile_interval_seconds=env.number("OTP_RECONCILE_INTERVAL_SECONDS", 10.0, 0.05, 3600),
            reconcile_give_up_seconds=env.integer("OTP_RECONCILE_GIVE_UP_SECONDS", 3600, 60, 7 * 86400),
            allowed_countries=env.countries("OTP_ALLOWED_COUNTRIES", ("VN",)),
            hash_workers=env.integer("OTP_HASH_WORKERS", usable_cores(), 1, 256),
            hash_queue=env.auto_integer("OTP_HASH_QUEUE", 0, 100_000),
            log_level=env.choice("OTP_LOG_LEVEL", "INFO", _LOG_LEVELS),
            log_json=env.flag("OTP_LOG_JSON", True),
            docs=env.flag("OTP_DOCS", True),
            metrics_keys=env.keys("OTP_METRICS_KEYS"),
            client_timeout_seconds=env.number("OTP_CLIENT_TIMEOUT_SECONDS", 10.0, 0.5, 300),
            notices=tuple(env.notices),
        )
        settings._check_webhook(env)
        if env.production and not (settings.api_keys or settings.tenants_file):
            env.refuse("OTP_API_KEYS", "OTP_API_KEYS (comma-separated) or OTP_TENANTS_FILE is required")
        tenant_problems = settings._tenant_problems()
        settings._check_metrics_keys(env)
        problems = env.problems + tenant_problems
        if problems:
            raise SettingsError(list(dict.fromkeys(problems)))  # a problem found twice is said once
        return settings

    @property
    def storage_bound_seconds(self) -> float:
        """The longest one storage operation may take: three tries of the timeout, plus backoff."""
        return self.redis_timeout_seconds * 3 + 1.0

    def all_tenants(self) -> tuple[Tenant, ...]:
        """The tenants of the tenants file, and ``default`` holding OTP_API_KEYS when those are set."""
        if not self.api_keys:
            return self.tenants
        default = Tenant(
            DEFAULT_TENANT,
            tuple(dict.fromkeys(hash_api_key(key) for key in self.api_keys)),
            webhook_url=self.webhook_url or None,
            webhook_secret=self.webhook_secret or None,
        )
        return (*self.tenants, default)

    def _check_webhook(self, env: _EnvReader) -> None:
        """OTP_WEBHOOK_URL and OTP_WEBHOOK_SECRET: both or neither, each in its form."""
        url_name, secret_name = "OTP_WEBHOOK_URL", "OTP_WEBHOOK_SECRET"
        if not self.webhook_url and not self.webhook_secret:
            return
        if not self.webhook_url or not self.webhook_secret:
            env.refuse(
                secret_name if self.webhook_url else url_name, f"{url_name} and {secret_name} go together"
            )
            return
        parts = _split(self.webhook_url)
        url_problem_found = (
            _placeholder_url_problem(parts) or url_problem(self.webhook_url)
            if parts
            else "must be an http(s) URL with a host"
        )
        if url_problem_found:
            env.refuse(url_name, f"{url_name} {url_problem_found}")
        secret_problem_found = secret_problem(self.webhook_secret)
        if secret_problem_found:  # never echoed: it may be the real secret in a wrong form
            env.refuse(secret_name, f"{secret_name} {secret_problem_found}")
        if not (url_problem_found or secret_problem_found or self.api_keys):
            env.refuse(
                url_name, f"{url_name} is for the tenant of OTP_API_KEYS; tenants file entries have their own"
            )

    def _tenant_problems(self) -> list[str]:
        """Tenants that clash: a file tenant named default beside OTP_API_KEYS, or a key held twice."""
        if any(tenant.name == DEFAULT_TENANT for tenant in self.tenants) and self.api_keys:
            return [
                "OTP_TENANTS_FILE defines a tenant named default, which OTP_API_KEYS also defines: use one"
            ]
        return check_tenants(self.all_tenants())

    def _check_metrics_keys(self, env: _EnvReader) -> None:
        """A metrics key must open /metrics alone: one that is also an API key would open everything."""
        api_key_hashes = {key_hash for tenant in self.all_tenants() for key_hash in tenant.key_hashes}
        if any(hash_api_key(key) in api_key_hashes for key in self.metrics_keys):
            env.refuse(
                "OTP_METRICS_KEYS",
                "OTP_METRICS_KEYS holds a key that is also an API key: a metrics key must open /metrics only",
            )

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (tests and dev mode)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def settings_help() -> str:
    """Every setting in a few words, for ``serve --help`` (``\\b`` keeps click from reflowing them)."""
    width = max(len(name) for _, group in _SETTINGS for name, _ in group) + 2
    paragraphs = [
        "Settings come from OTP_* environment variables; those marked * may instead come from the file "
        "named by NAME_FILE (not both). serve refuses to start on any problem, one line each, with exit "
        "status 2. README.md, Settings, says more."
    ]
    for title, group in _SETTINGS:
        lines = [f"  {name.ljust(width)}{meaning}" for name, meaning in group]
        paragraphs.append("\n".join(["\b", f"{title}:", *lines]))
    return "\n\n".join(paragraphs)


class _EnvReader:
    """Reads typed values, collecting problems (at most one per setting) instead of failing on the first."""

    def __init__(self, environ: Mapping[str, str], *, production: bool):
        self._environ = environ
        self.production = production
        self.problems: list[str] = []
        self.notices: list[str] = []
        self._refused: set[str] = set()

    def refuse(self, name: str, problem: str) -> None:
        """Record PROBLEM for the setting NAME unless it has one already: one line per setting."""
        if name not in self._refused:
            self._refused.add(name)
            self.problems.append(problem)

    def raw(self, name: str) -> str:
        value = self._environ.get(name, "").strip()
        if name not in _SECRETS and _unquoted(value) != value:  # a secret may well end in a quote
            self.refuse(name, f"{name} is wrapped in quotes, which were kept as part of it: remove them")
        return value

    def note_unknown_names(self) -> None:
        """Notices for OTP_* variables that look like a misspelt setting, or a file for a non-secret.

        Not problems: other software sets OTP_* variables too (Kubernetes does for a service named otp).
        """
        for name in sorted(self._environ):
            if not name.startswith("OTP_") or name in _KNOWN_NAMES:
                continue
            if name.endswith("_FILE") and name.removesuffix("_FILE") in _KNOWN_NAMES:
                self.notices.append(
                    f"{name} is not read: only secrets come from files ({', '.join(sorted(_SECRETS))})"
                )
            elif close := difflib.get_close_matches(name, _KNOWN_NAMES, n=1, cutoff=0.85):
                self.notices.append(f"{name} is not a setting: did you mean {close[0]}?")

    def require(self, name: str) -> None:
        """In production, NAME must be set; a misspelt variable nearby is pointed at."""
        if not self.production:
            return
        unknown = [other for other in self._environ if other.startswith("OTP_") and other not in _KNOWN_NAMES]
        misspelt = difflib.get_close_matches(name, unknown, n=1, cutoff=0.85)
        hint = f" ({misspelt[0]} is set: misspelt?)" if misspelt else ""
        self.refuse(name, f"{name} is required{hint}")

    def text(self, name: str, default: str, *, required: bool = False) -> str:
        """Free text that must not be a placeholder; DEFAULT when unset (production: refused if REQUIRED)."""
        value = self.raw(name)
        if not value:
            if required:
                self.require(name)
            return default
        mark = _placeholder_in(value)
        if mark:
            self.refuse(name, f"{name} holds a placeholder ({mark!r}): set the real value")
        return value

    def caller(self, name: str) -> str:
        value = self.text(name, "", required=True)
        problem = caller_problem(value) if value else None
        if problem:
            self.refuse(name, f"{name} {problem}")
        return value

    def url(self, name: str, default: str, https_because: str) -> str:
        """An http(s) base URL (https in production, off loopback); required in production."""
        value = self.raw(name).rstrip("/")
        if not value:
            self.require(name)
            return default
        problem = _base_url_problem(value, https_because if self.production else None)
        if problem:
            self.refuse(name, f"{name} {problem}")
        return value

    def provider_url(self, name: str, default: str) -> str:
        """The provider's base URL: https preferred, plain http allowed with a start-up warning.

        Why not refused like OTP_PUBLIC_URL: the provider's own reference shows only http:// hosts,
        and a service that cannot reach its only provider is no safer; the warning says what crosses
        the network in the clear.
        """
        value = self.url(name, default, https_because="")
        parts = _split(value)
        if self.production and parts and parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            self.notices.append(
                f"{name} is plain http: the secret key, tokens and codes cross the network unencrypted; "
                "use https:// if the provider offers it"
            )
        return value

    def redis_url(self, name: str) -> str:
        value = self.secret(name, required=True, checked_elsewhere=True)
        if not value:
            return value
        if _unquoted(value) != value:  # no URL begins and ends with a quote
            self.refuse(name, f"{name} is wrapped in quotes, which were kept as part of it: remove them")
        # The credentials are secret (checked whole); the rest is an address that may hold a placeholder.
        scheme, _, rest = value.partition("://")
        credentials, _, address = rest.rpartition("@")
        mark = _placeholder_in(f"{scheme}://{address}")
        password = credentials.rpartition(":")[2]
        if mark:
            self.refuse(name, f"{name} holds a placeholder ({mark!r}): set the real address")
        elif password and self.production and _is_stand_in_secret(password):
            self.refuse(name, f"{name} holds a placeholder password: set the real one")
        try:
            target = parse_redis_url(value)
        except ValueError as exc:
            self.refuse(name, str(exc))
            return value
        # Every Sentinel and Cluster seed too: one left on example.com is as surely a copied example.
        # Only hosts are named, never the rest of the URL, which may hold the password.
        reserved = _documentation_host_problem(target.hosts)
        if reserved:
            self.refuse(name, f"{name} {reserved}")
        return value

    def secret(
        self, name: str, *, required: bool = False, min_length: int = 0, checked_elsewhere: bool = False
    ) -> str:
        """The value of NAME, or the contents of the file NAME_FILE names; not a placeholder."""
        value = self._secret_text(name, required=required)
        if not value:
            if required:
                self.require(name)
            return value
        if checked_elsewhere:
            return value
        if self.is_placeholder_secret(value):
            self.refuse(name, f"{name} holds a placeholder: set the real secret")
        elif self.production and len(value.encode()) < min_length:
            self.refuse(name, f"{name} must be at least {min_length} bytes long")
        return value

    def keys(self, name: str) -> tuple[str, ...]:
        """Keys separated by commas (or lines, in a file); in production each 16+ and not a placeholder."""
        value = self._secret_text(name)
        keys = tuple(key for key in dict.fromkeys(re.split(r"[,\s]+", value)) if key)
        if _TEMPLATE_MARK.fullmatch(_unquoted(value)):  # the list as a whole is an example's <...>
            self.refuse(name, f"{name} holds a placeholder: set the real keys")
        if not self.production:
            return keys
        # Keys are named by position, never shown: one may be live.
        flaws = [
            f"key {position} is a placeholder"
            if _is_stand_in_secret(key)
            else f"key {position} is shorter than {_MIN_KEY_LENGTH} characters"
            for position, key in enumerate(keys, start=1)
            if _is_stand_in_secret(key) or len(key) < _MIN_KEY_LENGTH
        ]
        if flaws:
            self.refuse(name, f"{name}: {', '.join(flaws)}")
        return keys

    def is_placeholder_secret(self, value: str) -> bool:
        """The whole value is an example's <...> or {...}; in production also a stand-in (changeme, xxx).

        Quotes around it are looked through: docker --env-file keeps them, and "<...>" is no secret.
        """
        value = _unquoted(value)
        return bool(_TEMPLATE_MARK.fullmatch(value) or (self.production and _is_stand_in_secret(value)))

    def _secret_text(self, name: str, *, required: bool = False) -> str:
        """NAME's value, or what NAME_FILE's file holds; both set is a problem (which one is meant?).

        An empty file is an unset optional secret (Compose and Kubernetes mount one for a secret
        not used), and a problem for a REQUIRED one in production, naming the file.
        """
        file_name, value = self.raw(name + "_FILE"), self.raw(name)
        if file_name and value:
            self.refuse(name, f"{name} and {name}_FILE are both set: set one")
            return value
        if not file_name:
            return value
        try:
            value = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.refuse(name, f"{name}_FILE cannot be read: {file_name}: {exc.strerror}")
            return ""
        except UnicodeDecodeError:
            self.refuse(name, f"{name}_FILE names a file that is not UTF-8 text: {file_name}")
            return ""
        if not value and required and self.production:
            self.refuse(name, f"{name}_FILE names an empty file: {file_name}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw(name).upper()
        if not value:
            return default
        if value not in choices:
            self.refuse(name, f"{name} must be one of {', '.join(choices)}, got {self.raw(name)!r}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name).lower()
        if not value:
            return default
        if value not in _TRUE | _FALSE:
            self.refuse(
                name, f"{name} must be true or false (or 1/0, yes/no, on/off), got {self.raw(name)!r}"
            )
            return default
        return value in _TRUE

    def countries(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Two-letter ISO 3166 regions that phonenumbers knows, comma-separated."""
        value = self.raw(name)
        if not value:
            return default
        given = [part.strip() for part in value.split(",") if part.strip()]
        unknown = [region for region in given if region.upper() not in phonenumbers.SUPPORTED_REGIONS]
        if not given:
            self.refuse(name, f"{name} names no region: use two-letter ISO 3166 codes such as VN")
        elif unknown:
            named = ", ".join(repr(region) for region in unknown)
            verb = "is not a region" if len(unknown) == 1 else "are not regions"
            hint = "use two-letter ISO 3166 codes such as VN"
            self.refuse(name, f"{name}: {named} {verb} the phone number library knows: {hint}")
        else:
            regions = tuple(dict.fromkeys(region.upper() for region in given))
            foreign = [region for region in regions if region not in DIALLED_REGIONS]
            if not foreign:
                return regions
            self.refuse(
                name,
                f"{name}: {', '.join(foreign)}: the provider is given numbers in Vietnamese national "
                "format only, so a number of another country would be dialled as a Vietnamese one "
                "(someone else would hear its code); VN is the only region accepted",
            )
        return default

    def limits(self, name: str, default: str) -> Limits:
        raw = self.raw(name) or default
        try:
            return parse_limits(raw)
        except ValueError as exc:
            self.refuse(name, f"{name}: {exc}")
            return parse_limits(default)

    def phone_limits(self) -> Limits:
        """OTP_PHONE_LIMITS, or the deprecated OTP_PHONE_CALLS_PER_HOUR read as N/1h."""
        if self.raw("OTP_PHONE_LIMITS") or not self.raw("OTP_PHONE_CALLS_PER_HOUR"):
            return self.limits("OTP_PHONE_LIMITS", "3/10m,10/24h")
        per_hour = self.integer("OTP_PHONE_CALLS_PER_HOUR", 10, 1, 10000)
        self.notices.append(f"OTP_PHONE_CALLS_PER_HOUR is deprecated: read as OTP_PHONE_LIMITS={per_hour}/1h")
        return (Limit(per_hour, 3_600_000),)

    def auto_integer(self, name: str, low: int, high: int) -> int | None:
        """An integer, or None (the service works it out) when unset or ``auto``."""
        raw = self.raw(name)
        if not raw or raw.lower() == "auto":
            return None
        return self.integer(name, low, low, high)

    def optional_integer(self, name: str, default: int | None, low: int, high: int) -> int | None:
        """An integer, or None (no limit) when set to ``off``."""
        raw = self.raw(name)
        if raw.lower() == "off":
            return None
        if not raw:
            return default
        return self.integer(name, default or low, low, high)

    def tenants(self, name: str) -> tuple[Tenant, ...]:
        path = self.raw(name)
        if not path or name in self._refused:
            return ()
        tenants, problems = load_tenants_file(Path(path))
        self.problems += problems  # one line per problem in the file, each naming its place
        return tenants

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.raw(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.refuse(name, f"{name} must be a whole number, got {raw!r}")
            return default
        if not low <= value <= high:
            self.refuse(name, f"{name} must be between {low} and {high}, got {value}")
            return default
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.raw(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.refuse(name, f"{name} must be a number, got {raw!r}")
            return default
        if not low <= value <= high:  # also refuses nan
            self.refuse(name, f"{name} must be between {low} and {high}, got {value}")
            return default
        return value


def _placeholder_in(value: str) -> str | None:
    """The placeholder text in a value that is not secret, or None."""
    found = _TEMPLATE_MARK.search(value) or _WORD_MARK.search(value)
    if found:
        return found.group()
    return value if _STAND_IN.fullmatch(value) else None


def _unquoted(value: str) -> str:
    """VALUE without the pair of quotes around it that a shell or systemd would have removed."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


# What a production secret may not look like, beyond the placeholders above: a command the shell
# never ran ($(...), `...`), the example's own words with its brackets taken off ("32+ random bytes,
# e.g. the output of: openssl rand -base64 48"), a word saying it is not real (test-pepper-...), or
# next to no variety (aaaa..., a lone "x").
_NOT_A_SECRET = re.compile(
    r"\$\(|`|\be\.g\.|openssl\s+rand|random\s+(?:bytes|characters)"
    r"|(?<![a-z0-9])(?:test|example|sample|dummy|demo|fake)(?![a-z0-9])",
    re.IGNORECASE,
)
_MIN_DISTINCT_CHARACTERS = 4


def _is_stand_in_secret(value: str) -> bool:
    return bool(
        _STAND_IN.fullmatch(value)
        or _WORD_MARK.search(value)
        or _NOT_A_SECRET.search(value)
        or len(set(value)) < _MIN_DISTINCT_CHARACTERS
    )


def _base_url_problem(url: str, https_because: str | None) -> str | None:
    """Why URL cannot be a base URL the service builds on, or None; https unless HTTPS_BECAUSE is None."""
    parts = _split(url)
    placeholder = parts and _placeholder_url_problem(parts)
    if placeholder:
        return placeholder
    if not parts or parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    try:
        parts.port  # noqa: B018 - urllib checks the port only when it is read
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    if parts.username or parts.password:
        return "must not carry credentials"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "must not have a query (?...) or fragment (#...): it is a base URL"
    if https_because and parts.scheme == "http" and not is_loopback(parts.hostname):
        return f"must be https:// ({https_because}); http:// only on a loopback host"
    return None


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:  # an unclosed [ of an IPv6 address
        return None


def _placeholder_url_problem(parts: SplitResult) -> str | None:
    """A placeholder in the URL's address (never its credentials), or a host reserved for documentation."""
    address = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    mark = _TEMPLATE_MARK.search(address) or _WORD_MARK.search(address)
    if mark:
        return f"holds a placeholder ({mark.group()!r}): set the real URL"
    return _documentation_host_problem([parts.hostname or ""])


def _documentation_host_problem(hosts: Iterable[str]) -> str | None:
    """The HOSTS reserved for documentation (RFC 2606), named, or None."""
    named = dict.fromkeys(host.lower().rstrip(".") for host in hosts)
    reserved = [
        host
        for host in named
        if any(host == domain or host.endswith("." + domain) for domain in _DOCUMENTATION_DOMAINS)
    ]
    if len(reserved) > 1:
        return f"names {', '.join(reserved)}, hosts reserved for documentation (RFC 2606): set the real hosts"
    if reserved:
        return f"names {reserved[0]}, a host reserved for documentation (RFC 2606): set the real host"
    return None
