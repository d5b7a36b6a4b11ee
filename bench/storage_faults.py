"""What clients see, and what is left, when Redis restarts, stalls, is killed or fails over.

Starts its own valkey-server processes, the sandbox and the service (1 s storage timeout, the
default), drives a steady load of reads and starts, injects each fault, and prints per fault:
the answers during the fault, how long a request waited at most, how long until requests succeed
again, and whether any verification was left stranded. Runs outside CI.

Run: .venv/bin/python -m bench.storage_faults
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.support.flows import heard_code
from tests.support.invariants import stranded_after_settling
from tests.support.redis_servers import ServerProcess, sentinel_setup, standalone_server
from tests.support.sandbox import SandboxHandle, running_sandbox
from tests.support.service import ServiceHandle, running_service

LOAD_SECONDS = 10.0


async def _load(service: ServiceHandle, fault: Callable[[], None], at: float) -> dict[str, Any]:
    """Reads and starts at ~40 requests/s for LOAD_SECONDS; ``fault`` runs ``at`` seconds in."""
    answers: list[tuple[float, float, int, str]] = []  # sent at, took, status, code
    async with service.async_client() as client:
        vid = (await client.post("/otp", json={"phone": "0912999000"})).json()["id"]
        started = time.monotonic()
        tasks = []
        n = 0

        async def one(kind: int) -> None:
            sent = time.monotonic()
            if kind % 4 == 0:
                response = await client.post("/otp", json={"phone": f"09129{kind % 100000:05d}"})
            else:
                response = await client.get(f"/otp/{vid}")
            code = response.json().get("code", "") if response.status_code >= 400 else ""
            answers.append((sent - started, time.monotonic() - sent, response.status_code, code))

        fault_done = False
        while time.monotonic() - started < LOAD_SECONDS:
            if not fault_done and time.monotonic() - started >= at:
                await asyncio.get_running_loop().run_in_executor(None, fault)
                fault_done = True
            n += 1
            tasks.append(asyncio.create_task(one(n)))
            await asyncio.sleep(0.025)
        await asyncio.gather(*tasks)
    failures = [a for a in answers if a[2] >= 500]
    last_failure_sent = max((a[0] for a in failures), default=None)
    return {
        "requests": len(answers),
        "answers": dict(Counter(f"{a[2]} {a[3]}".strip() for a in answers)),
        "slowest_s": round(max(a[1] for a in answers), 2),
        "failing_after_fault_s": None if last_failure_sent is None else round(last_failure_sent - at, 2),
    }


def _scenario(name: str, server_url: str, sandbox: SandboxHandle, fault: Callable[[], None]) -> None:
    with running_service(server_url, sandbox.url, redis_timeout_seconds=1.0) as service:
        result = asyncio.run(_load(service, fault, at=1.0))
        left = stranded_after_settling(server_url, service, timeout=30)
        with service.client() as client:
            vid = client.post("/otp", json={"phone": "0912999111"}).json()["id"]
            ok = client.post("/verify", json={"id": vid, "code": heard_code(sandbox, "0912999111")}).json()
    print(f"{name}: {result}; stranded afterwards: {len(left)}; a new verification approves: {ok['valid']}")


def main() -> None:
    with running_sandbox() as sandbox:
        with standalone_server(appendonly=True) as server:
            _scenario("restart (SIGTERM, start)", server.url, sandbox, server.restart)
        with standalone_server(appendonly=True) as server:
            _scenario("pause 6 s (SIGSTOP, SIGCONT)", server.url, sandbox, _pause(server, 6.0))
        with standalone_server(appendonly=True) as server:
            _scenario("kill (SIGKILL, start after 1 s)", server.url, sandbox, _kill(server, 1.0))
        with sentinel_setup() as setup:
            _scenario("failover (master SIGKILL)", setup.url, sandbox, setup.master.kill)


def _pause(server: ServerProcess, seconds: float) -> Callable[[], None]:
    def fault() -> None:
        server.pause()
        threading_timer(seconds, server.resume)

    return fault


def _kill(server: ServerProcess, seconds: float) -> Callable[[], None]:
    def fault() -> None:
        server.kill()
        threading_timer(seconds, server.start)

    return fault


def threading_timer(seconds: float, action: Callable[[], None]) -> None:
    threading.Timer(seconds, action).start()


if __name__ == "__main__":
    main()
