"""An overloaded worker refuses checks at once with 503 `overloaded` instead of queueing them."""

from __future__ import annotations

import threading

import httpx

from tests.support.flows import assert_problem, create, heard_code, wrong_code
from tests.support.redis_servers import wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import running_service


def test_a_check_beyond_the_hash_queue_is_refused_at_once_and_spends_no_attempt(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """With its one hashing thread busy and no queue, a worker answers the next check 503 `overloaded`
    with Retry-After while the first is still held, and only the first check spends an attempt."""
    with running_service(redis_url, sandbox.url, hash_workers=1, hash_queue=0) as service:
        with service.client() as client:
            vid = create(client, "0987650001")["id"]
            wrong = wrong_code(heard_code(sandbox, "0987650001"))
        service.hasher.gate.clear()  # every check now holds the only thread until the gate opens
        held: list[httpx.Response] = []

        def check_held() -> None:
            with service.client() as client:
                held.append(client.post("/verify", json={"id": vid, "code": wrong}))

        first = threading.Thread(target=check_held)
        first.start()
        try:
            wait_until(lambda: service.hasher.checks == 1, 10, "the first check on the hashing thread")
            with service.client() as client:
                refused = client.post("/verify", json={"id": vid, "code": wrong})
                assert not held, "the refusal came only after the held check finished"
        finally:
            service.hasher.gate.set()
            first.join(timeout=10)
        assert_problem(refused, 503, "overloaded")
        assert refused.headers["retry-after"] == "1"
        assert held[0].status_code == 200
        with service.client() as client:
            after = client.get(f"/otp/{vid}").json()
        assert after["attempts"] == 1  # the refused check spent nothing
        assert service.hasher.checks == 1
        with service.client() as client:
            scraped = client.get("/metrics").text
        assert "otp_checks_shed_total 1.0" in scraped  # refused before the app read it
