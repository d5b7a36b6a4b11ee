"""When Redis is down: readiness says so and requests get 503, never a 500."""

from __future__ import annotations

from prometheus_client import REGISTRY
from redis import Redis

from otpservice.adapters.storage.keys import verification_key
from tests.support.flows import InBackground, assert_problem
from tests.support.provider import HeldAnswers
from tests.support.redis_servers import wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.servers import refused_port
from tests.support.service import running_service


def test_redis_down_is_503(sandbox: SandboxHandle) -> None:
    """With Redis unreachable, /readyz is 503 not_ready and the API answers 503 storage_unavailable."""
    with refused_port() as port, running_service(f"redis://127.0.0.1:{port}/0", sandbox.url) as service:
        with service.client(api_key=None) as anonymous:
            assert anonymous.get("/healthz").status_code == 200
            assert_problem(anonymous.get("/readyz"), 503, "not_ready")
        with service.client() as client:
            response = client.post("/otp", json={"phone": "0987654321"})
            assert_problem(response, 503, "storage_unavailable")
            assert response.headers["retry-after"]
            assert_problem(
                client.post("/verify", json={"id": "vf_1", "code": "123456"}), 503, "storage_unavailable"
            )
            assert_problem(client.get("/otp/vf_1"), 503, "storage_unavailable")


def test_a_verification_lost_while_its_call_is_placed_answers_code_lost(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """Storage losing the record while its call is being placed (a failover dropping the create) is
    503 code_lost with the id and call_may_have_rung, logged and counted as a lost record, never a 404."""
    held = HeldAnswers()
    lost = {"write": "record_placed_call"}
    before = REGISTRY.get_sample_value("otp_records_lost_total", lost) or 0
    with (
        running_service(redis_url, sandbox.url, provider_transport=held) as service,
        service.client() as client,
        Redis.from_url(redis_url) as store,
    ):
        starting = InBackground(service, lambda own: own.post("/otp", json={"phone": "0912000666"}))
        wait_until(lambda: bool(held.placed), 5, "the call being placed")
        vid = held.called_id()
        assert store.delete(verification_key(vid)) == 1
        held.release.set()
        problem = assert_problem(starting.answer(timeout=10), 503, "code_lost")
        assert (problem["id"], problem["call_may_have_rung"]) == (vid, True)
        assert_problem(client.get(f"/otp/{vid}"), 404, "not_found")
        assert '"outcome":"record_lost"' in service.logs.getvalue()
    assert REGISTRY.get_sample_value("otp_records_lost_total", lost) == before + 1
