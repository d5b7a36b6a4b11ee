"""The state machine, its races and reconciliation through Redis Sentinel, and a failover of the master."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.contract import SENTINEL_MODULES, contract_tests
from tests.support.flows import heard_code
from tests.support.redis_servers import sentinel_setup
from tests.support.sandbox import SandboxHandle
from tests.support.service import running_service

globals().update(contract_tests(SENTINEL_MODULES))


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A master, a replica and three sentinels for this module's tests: ``redis+sentinel://...``."""
    with sentinel_setup() as setup:
        yield setup.url


@pytest.mark.long
def test_master_failover_serves_again_within_15_seconds(sandbox: SandboxHandle) -> None:
    """With the master killed, /readyz reports the outage and creates and verifies work again within 15 s."""
    with (
        sentinel_setup() as setup,
        running_service(setup.url, sandbox.url, redis_timeout_seconds=0.25) as service,
        service.client() as client,
    ):
        before = client.post("/otp", json={"phone": "0912345100"})
        assert before.status_code == 201
        with setup.master.client() as master:
            assert master.execute_command("WAIT", 1, 2000) == 1  # the replica has it
        old_master = setup.master.port
        setup.master.kill()
        killed = time.monotonic()
        readiness: list[int] = []
        attempt = 0
        while True:
            attempt += 1
            readiness.append(client.get("/readyz").status_code)
            phone = f"091234{attempt % 10000:04d}"
            created = client.post("/otp", json={"phone": phone})
            if created.status_code == 201:
                verified = client.post(
                    "/verify", json={"id": created.json()["id"], "code": heard_code(sandbox, phone)}
                )
                if verified.status_code == 200:
                    break
            assert created.status_code in (201, 503), created.text
            assert time.monotonic() - killed < 15, "not serving 15 s after the master was killed"
            time.sleep(0.1)
        recovered = time.monotonic() - killed
        assert verified.json()["valid"] is True
        kept = client.post(
            "/verify", json={"id": before.json()["id"], "code": heard_code(sandbox, "0912345100")}
        )
        assert kept.json()["valid"] is True, "a verification replicated before the failover was lost"
        assert 503 in readiness, "readiness never reported the outage"
        assert setup.current_master_port() != old_master
        with httpx.Client(base_url=service.url) as probe:
            assert probe.get("/readyz").status_code == 200
    print(f"failover: serving again {recovered:.1f} s after the master was killed")
