"""Run ``otpservice serve`` as operators do: a real process (and its workers) in production mode."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from otpservice.sandbox.config import EXAMPLE_SECRET_KEY
from tests.support.redis_servers import wait_until
from tests.support.servers import free_port

PRODUCTION_API_KEY = "prod-api-key-0123456789abcdef"
METRICS_KEY = "scrape-key-0123456789abcdef"


def production_env(redis_url: str, provider_url: str, **overrides: str) -> dict[str, str]:
    """A complete production environment pointing at a test Redis and the sandbox (cheap argon2)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTP_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env |= {
        "OTP_REDIS_URL": redis_url,
        "OTP_API_KEYS": PRODUCTION_API_KEY,
        "OTP_METRICS_KEYS": METRICS_KEY,
        "OTP_PEPPER": "prod-pepper-that-is-long-enough-0123456789",
        "OTP_PUBLIC_URL": "https://127.0.0.1:1",
        "OTP_AUTOCALL_URL": provider_url,
        "OTP_AUTOCALL_CAMPAIGN_ID": "1",
        "OTP_AUTOCALL_SECRET_KEY": EXAMPLE_SECRET_KEY,
        "OTP_AUTOCALL_CALLER": "0123456789",
        "OTP_ARGON2_TIME_COST": "1",
        "OTP_ARGON2_MEMORY_KIB": "1024",
        "OTP_PHONE_LIMITS": "off",
        "OTP_PREFIX_LIMITS": "off",
    }
    return env | overrides


@dataclass(frozen=True)
class ServeProcess:
    """A running ``otpservice serve`` and where its log goes."""

    url: str
    log: Path
    pid: int = 0  # the supervisor's, with several workers

    def client(self, api_key: str | None = PRODUCTION_API_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@contextmanager
def running_serve(env: dict[str, str], log: Path, workers: int = 1) -> Iterator[ServeProcess]:
    """``otpservice serve --workers N`` on a free loopback port until the block ends (then SIGTERM)."""
    port = free_port()
    command = [sys.executable, "-m", "otpservice", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as stderr:
        process = subprocess.Popen(  # noqa: S603 - our own entry point
            [*command, "--workers", str(workers)], env=env, stdout=stderr, stderr=stderr
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is not None or _answers(url), 30, f"serve on {url}")
        assert process.poll() is None, log.read_text()
        yield ServeProcess(url, log, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=15)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def dev_service(
    env: dict[str, str], port: int, sandbox_port: int, log: Path, *options: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`otpservice dev` as its own process (stderr appended to ``log``), ready to serve; stopped
    with SIGTERM at the end unless the block stopped it."""
    with log.open("a") as stderr:
        process = subprocess.Popen(  # noqa: S603 - our own entry point
            [
                sys.executable,
                "-m",
                "otpservice",
                "dev",
                "--port",
                str(port),
                "--sandbox-port",
                str(sandbox_port),
                *options,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 30, f"the service to start:\n{log.read_text()[-2000:]}")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=15)
