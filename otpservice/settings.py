"""Settings, loaded once from the environment (or ``*_FILE`` files) and injected everywhere else.

Every secret may come from ``OTP_X`` or from a file named by ``OTP_X_FILE`` (Docker and Kubernetes
secrets). Production mode refuses to start while a secret is missing or still a placeholder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from otpservice.domain.limits import Limit, Limits, parse_limits
from otpservice.domain.webhook_endpoints import secret_problem, url_problem
from otpservice.redis_url import parse_redis_url
from otpservice.tenants import DEFAULT_TENANT, Tenant, check_tenants, hash_api_key, load_tenants_file

Mode = Literal["production", "dev"]

_PLACEHOLDER = re.compile(
    r"^(|change[-_ ]?me.*|changeit|placeholder|secret|password|todo|xxx+|\.\.\.|<.*>"
    r"|your[-_].*|example.*|test)$",
    re.IGNORECASE,
)


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, as containers and taskset set it), at least 1."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # platforms without sched_getaffinity (macOS)
        return os.cpu_count() or 1


class SettingsError(ValueError):
    """The environment does not describe a runnable service; the message names every problem."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))
        self.problems = problems


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
    notices: tuple[str, ...] = ()  # deprecated settings in use, logged at start
    retention_seconds: int = 86400
    reconcile_after_seconds: int = 90
    reconcile_interval_seconds: float = 10.0
    reconcile_give_up_seconds: int = 3600
    allowed_countries: tuple[str, ...] = ("VN",)
    hash_workers: int = field(default_factory=usable_cores)
    log_level: str = "INFO"
    log_json: bool = True
    docs: bool = True  # /docs and /schema (OTP_DOCS)
    metrics_keys: tuple[str, ...] = field(default=(), repr=False)  # may read /metrics and nothing else
    client_timeout_seconds: float = 10.0  # a request's head and body must arrive within this

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, mode: Mode = "production") -> Settings:
        """Read every ``OTP_*`` variable; raise :class:`SettingsError` listing all problems at once."""
        reader = _EnvReader(os.environ if environ is None else environ)
        ac, a2 = AutocallSettings(), Argon2Settings()
        autocall = AutocallSettings(
            url=reader.text("OTP_AUTOCALL_URL", ac.url).rstrip("/"),
            secret_key=reader.secret("OTP_AUTOCALL_SECRET_KEY"),
            campaign_id=reader.text("OTP_AUTOCALL_CAMPAIGN_ID", ac.campaign_id),
            caller=reader.text("OTP_AUTOCALL_CALLER", ac.caller),
            template=reader.text("OTP_AUTOCALL_TEMPLATE", ac.template),
            connect_timeout_seconds=reader.number("OTP_AUTOCALL_CONNECT_TIMEOUT_SECONDS", 3.0, 0.1, 60),
            read_timeout_seconds=reader.number("OTP_AUTOCALL_READ_TIMEOUT_SECONDS", 10.0, 0.1, 120),
        )
        argon2 = Argon2Settings(
            time_cost=reader.integer("OTP_ARGON2_TIME_COST", a2.time_cost, 1, 20),
            memory_cost_kib=reader.integer("OTP_ARGON2_MEMORY_KIB", a2.memory_cost_kib, 8, 4 * 1024**2),
            parallelism=reader.integer("OTP_ARGON2_PARALLELISM", a2.parallelism, 1, 16),
        )
        settings = cls(
            mode=mode,
            redis_url=reader.secret("OTP_REDIS_URL"),  # may carry a password
            redis_timeout_seconds=reader.number("OTP_REDIS_TIMEOUT_SECONDS", 1.0, 0.05, 30),
            api_keys=tuple(k.strip() for k in reader.secret("OTP_API_KEYS").split(",") if k.strip()),
            pepper=reader.secret("OTP_PEPPER").encode(),
            public_url=reader.text("OTP_PUBLIC_URL", "").rstrip("/"),
            autocall=autocall,
            argon2=argon2,
            code_length=reader.integer("OTP_CODE_LENGTH", 6, 4, 10),
            ttl_seconds=reader.integer("OTP_TTL_SECONDS", 300, 60, 600),
            max_attempts=reader.integer("OTP_MAX_ATTEMPTS", 5, 1, 20),
            resend_cooldown_seconds=reader.integer("OTP_RESEND_COOLDOWN_SECONDS", 30, 0, 3600),
            max_sends=reader.integer("OTP_MAX_SENDS", 5, 1, 20),
            phone_limits=reader.phone_limits(),
            client_ip_limits=reader.limits("OTP_CLIENT_IP_LIMITS", "10/1h"),
            prefix_limits=reader.limits("OTP_PREFIX_LIMITS", "20/10m"),
            failure_lock=reader.limits("OTP_PHONE_FAILURE_LOCK", "10/24h"),
            daily_call_cap=reader.optional_integer("OTP_DAILY_CALL_CAP", 10_000, 1, 10_000_000),
            global_calls_per_minute=reader.optional_integer(
                "OTP_GLOBAL_CALLS_PER_MINUTE", None, 1, 10_000_000
            ),
            webhook_url=reader.text("OTP_WEBHOOK_URL", ""),
            webhook_secret=reader.secret("OTP_WEBHOOK_SECRET"),
            webhook_retry_hours=reader.number("OTP_WEBHOOK_RETRY_HOURS", 24.0, 0.001, 168),
            # at most 25: a lease (2 x timeout + 5 s) must end within 60 s when its worker dies
            webhook_timeout_seconds=reader.number("OTP_WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.5, 25),
            tenants_file=reader.text("OTP_TENANTS_FILE", ""),
            tenants=reader.tenants("OTP_TENANTS_FILE"),
            retention_seconds=reader.integer("OTP_RETENTION_SECONDS", 86400, 60, 30 * 86400),
            reconcile_after_seconds=reader.integer("OTP_RECONCILE_AFTER_SECONDS", 90, 0, 86400),
            reconcile_interval_seconds=reader.number("OTP_RECONCILE_INTERVAL_SECONDS", 10.0, 0.05, 3600),
            reconcile_give_up_seconds=reader.integer("OTP_RECONCILE_GIVE_UP_SECONDS", 3600, 60, 7 * 86400),
            allowed_countries=tuple(
                c.strip().upper() for c in reader.text("OTP_ALLOWED_COUNTRIES", "VN").split(",") if c.strip()
            ),
            hash_workers=reader.integer("OTP_HASH_WORKERS", usable_cores(), 1, 256),
            log_level=reader.text("OTP_LOG_LEVEL", "INFO").upper(),
            log_json=reader.flag("OTP_LOG_JSON", True),
            docs=reader.flag("OTP_DOCS", True),
            metrics_keys=tuple(k.strip() for k in reader.secret("OTP_METRICS_KEYS").split(",") if k.strip()),
            client_timeout_seconds=reader.number("OTP_CLIENT_TIMEOUT_SECONDS", 10.0, 0.5, 300),
            notices=tuple(reader.notices),
        )
        problems = reader.problems
        problems += settings.webhook_problems()
        if any(tenant.name == DEFAULT_TENANT for tenant in settings.tenants) and settings.api_keys:
            problems.append(
                "OTP_TENANTS_FILE defines a tenant named default, which OTP_API_KEYS also defines: use one"
            )
        else:
            problems += check_tenants(settings.all_tenants())
        if settings.redis_url:
            try:
                parse_redis_url(settings.redis_url)
            except ValueError as exc:
                problems.append(str(exc))
        if mode == "production":
            problems += settings.production_problems()
            # Their defaults point at the local sandbox, which production must never talk to.
            problems += [
                f"{name} is required"
                for name in ("OTP_AUTOCALL_URL", "OTP_AUTOCALL_CAMPAIGN_ID")
                if not reader.text(name, "")
            ]
        if problems:
            raise SettingsError(list(dict.fromkeys(problems)))  # a problem found twice is said once
        return settings

    @property
    def storage_bound_seconds(self) -> float:
        """The longest one storage operation may take: three tries of the timeout, plus backoff."""
        return self.redis_timeout_seconds * 3 + 1.0

    def production_problems(self) -> list[str]:
        """What stops this configuration from serving real users (missing or placeholder values)."""
        problems = []
        for name, value in (("OTP_REDIS_URL", self.redis_url), ("OTP_PUBLIC_URL", self.public_url)):
            if not value:
                problems.append(f"{name} is required")
        if self.public_url and not self.public_url.startswith("https://"):
            problems.append("OTP_PUBLIC_URL must be https:// (callback URLs carry per-call credentials)")

        if not self.api_keys and not self.tenants_file:
            problems.append("OTP_API_KEYS (comma-separated) or OTP_TENANTS_FILE is required")
        for key in self.api_keys:
            if _PLACEHOLDER.match(key) or len(key) < 16:
                problems.append("OTP_API_KEYS holds a placeholder or a key shorter than 16 characters")
                break
        if _PLACEHOLDER.match(self.pepper.decode(errors="replace")) or len(self.pepper) < 32:
            problems.append("OTP_PEPPER is missing, a placeholder or shorter than 32 bytes")
        if _PLACEHOLDER.match(self.autocall.secret_key):
            problems.append("OTP_AUTOCALL_SECRET_KEY is missing or a placeholder")
        if not self.autocall.caller:
            problems.append("OTP_AUTOCALL_CALLER is required")
        return problems

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

    def webhook_problems(self) -> list[str]:
        """OTP_WEBHOOK_URL and OTP_WEBHOOK_SECRET: both or neither, each in its form."""
        if not self.webhook_url and not self.webhook_secret:
            return []
        if not self.webhook_url or not self.webhook_secret:
            return ["OTP_WEBHOOK_URL and OTP_WEBHOOK_SECRET go together"]
        found = [
            f"{name} {problem}"
            for name, problem in (
                ("OTP_WEBHOOK_URL", url_problem(self.webhook_url)),
                ("OTP_WEBHOOK_SECRET", secret_problem(self.webhook_secret)),
            )
            if problem
        ]
        if not found and not self.api_keys:
            found.append(
                "OTP_WEBHOOK_URL is for the tenant of OTP_API_KEYS; tenants file entries have their own"
            )
        return found

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (tests and dev mode)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def settings_help() -> str:
    """The settings ``serve`` reads, for ``serve --help``."""
    return "Settings come from OTP_* environment variables (secrets also from OTP_*_FILE); see the README."


class _EnvReader:
    """Reads typed values, collecting problems instead of failing on the first."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        self.problems: list[str] = []
        self.notices: list[str] = []

    def limits(self, name: str, default: str) -> Limits:
        raw = self._environ.get(name, "").strip() or default
        try:
            return parse_limits(raw)
        except ValueError as exc:
            self.problems.append(f"{name}: {exc}")
            return parse_limits(default)

    def phone_limits(self) -> Limits:
        """OTP_PHONE_LIMITS, or the deprecated OTP_PHONE_CALLS_PER_HOUR read as N/1h."""
        if self._environ.get("OTP_PHONE_LIMITS", "").strip() or not self._environ.get(
            "OTP_PHONE_CALLS_PER_HOUR"
        ):
            return self.limits("OTP_PHONE_LIMITS", "3/10m,10/24h")
        per_hour = self.integer("OTP_PHONE_CALLS_PER_HOUR", 10, 1, 10000)
        self.notices.append(f"OTP_PHONE_CALLS_PER_HOUR is deprecated: read as OTP_PHONE_LIMITS={per_hour}/1h")
        return (Limit(per_hour, 3_600_000),)

    def optional_integer(self, name: str, default: int | None, low: int, high: int) -> int | None:
        """An integer, or None (no limit) when set to ``off``."""
        raw = self._environ.get(name, "").strip()
        if raw.lower() == "off":
            return None
        if not raw:
            return default
        return self.integer(name, default or low, low, high)

    def tenants(self, name: str) -> tuple[Tenant, ...]:
        path = self._environ.get(name, "").strip()
        if not path:
            return ()
        tenants, problems = load_tenants_file(Path(path))
        self.problems += problems
        return tenants

    def text(self, name: str, default: str) -> str:
        return self._environ.get(name, default).strip()

    def secret(self, name: str) -> str:
        """The value of NAME, or the contents of the file NAME_FILE points to."""
        file_name = self._environ.get(name + "_FILE")
        if file_name:
            try:
                return Path(file_name).read_text().strip()
            except OSError as exc:
                self.problems.append(f"{name}_FILE cannot be read: {exc.strerror}")
                return ""
        return self._environ.get(name, "").strip()

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self._environ.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name} must be a whole number, got {raw!r}")
            return default
        if not low <= value <= high:
            self.problems.append(f"{name} must be between {low} and {high}, got {value}")
            return default
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self._environ.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name} must be a number, got {raw!r}")
            return default
        if not low <= value <= high:
            self.problems.append(f"{name} must be between {low} and {high}, got {value}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name)
        if raw is None or not raw.strip():
            return default
        return raw.strip().lower() in {"1", "true", "yes", "on"}
