"""Run the real service on a loopback port against a real Redis and the Autocall sandbox."""

from __future__ import annotations

import io
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from otpservice.domain.codes import CodeHasher, RandomBelow
from otpservice.http.app import Seams, create_app
from otpservice.http.edge import server_options
from otpservice.logs import configure_logging
from otpservice.sandbox.config import EXAMPLE_SECRET_KEY
from otpservice.settings import Argon2Settings, AutocallSettings, Settings
from otpservice.tenants import Tenant, hash_api_key
from tests.support.sandbox import TLS_CONTEXT
from tests.support.servers import bound_socket, serve_in_thread

API_KEY = "test-api-key-0123456789"
PEPPER = b"test-pepper-that-is-long-enough-0123456789"


class ManualClock:
    """A clock that only moves when a test says so."""

    def __init__(self, start: datetime | None = None):
        self._now = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


class WallClock(ManualClock):
    """The real time (for benchmarks that measure it); advancing it is refused."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def advance(self, seconds: float) -> None:
        raise RuntimeError("a wall clock cannot be moved")


class CountingHasher(CodeHasher):
    """The real hasher, counting the codes it checks and noting which threads did the work.

    Checks run on several hashing threads at once, so the count is kept under a lock. ``gate``:
    clear it to hold every check until it is set again (a worker whose threads are all busy).
    """

    def __init__(self, pepper: bytes, params: Argon2Settings):
        super().__init__(pepper, params)
        self._lock = threading.Lock()
        self.checks = 0
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()

    def hash(self, verification_id: str, code: str) -> str:
        with self._lock:
            self.threads.add(threading.current_thread().name)
        return super().hash(verification_id, code)

    def matches(self, verification_id: str, code: str, encoded_hash: str) -> bool:
        with self._lock:
            self.checks += 1
            self.threads.add(threading.current_thread().name)
        self.gate.wait(timeout=30)
        return super().matches(verification_id, code, encoded_hash)


class ScriptedCodes:
    """The randomness seam, yielding the digits of the given codes in turn: tests that need known codes."""

    def __init__(self, *codes: str):
        self._digits = iter("".join(codes))

    def __call__(self, _bound: int) -> int:
        return int(next(self._digits))


def test_settings(redis_url: str, provider_url: str, public_url: str, **overrides: object) -> Settings:
    settings = Settings(
        mode="dev",
        redis_url=redis_url,
        # a tenant of its own per service: tests sharing a server do not meet each other's
        # pending verifications (one per number per tenant)
        tenants=(Tenant(f"t{secrets.token_hex(4)}", (hash_api_key(API_KEY),)),),
        pepper=PEPPER,
        public_url=public_url,
        autocall=AutocallSettings(
            url=provider_url,
            secret_key=EXAMPLE_SECRET_KEY,
            caller="0123456789",
            connect_timeout_seconds=1.0,
            read_timeout_seconds=0.75,  # the sandbox answers in milliseconds; timeouts come sooner
        ),
        hash_workers=2,
        hash_queue=10_000,  # no shedding: the race tests send hundreds of checks at once
        # cheap argon2: the tests prove behaviour, bench/ measures cost (and CPU is this suite's limit)
        argon2=Argon2Settings(time_cost=1, memory_cost_kib=1024),
        # many tests call the same number; the budgets have their own tests
        phone_limits=(),
        client_ip_limits=(),
        prefix_limits=(),
        failure_lock=(),
        daily_call_cap=None,
    )
    return settings.with_overrides(**overrides)


@dataclass
class ServiceHandle:
    """A running service and the seams a test may drive."""

    url: str
    settings: Settings
    clock: ManualClock
    hasher: CountingHasher
    logs: io.StringIO = field(default_factory=io.StringIO)

    def client(self, api_key: str | None = API_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=TLS_CONTEXT)

    def async_client(self, api_key: str | None = API_KEY) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=300)
        return httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=60, limits=limits, verify=TLS_CONTEXT
        )


@contextmanager
def running_service(
    redis_url: str,
    provider_url: str,
    *,
    provider_transport: httpx.AsyncBaseTransport | None = None,
    randbelow: RandomBelow = secrets.randbelow,
    clock: ManualClock | None = None,
    **overrides: object,
) -> Iterator[ServiceHandle]:
    sock = bound_socket()  # held from now on: the service's URL is known before the app is built
    port = int(sock.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    settings = test_settings(redis_url, provider_url, url, **overrides)
    clock = clock or ManualClock()
    hasher = CountingHasher(settings.pepper, settings.argon2)
    logs = io.StringIO()
    configure_logging("INFO", json=True, stream=logs)
    seams = Seams(
        clock=clock,
        hasher=hasher,
        provider_transport=provider_transport,
        randbelow=randbelow,
        tls=TLS_CONTEXT,
    )
    app = create_app(settings, seams)
    # The production server's limits, with the test servers' long keep-alive (see serve_in_thread).
    options = server_options(settings) | {"timeout_keep_alive": 60}
    with serve_in_thread(app, sock=sock, **options):
        yield ServiceHandle(url=url, settings=settings, clock=clock, hasher=hasher, logs=logs)
