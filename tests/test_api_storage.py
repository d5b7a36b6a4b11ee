"""When Redis is down: readiness says so and requests get 503, never a 500."""

from __future__ import annotations

from tests.support.flows import assert_problem
from tests.support.sandbox import SandboxHandle
from tests.support.servers import free_port
from tests.support.service import running_service


def test_redis_down_is_503(sandbox: SandboxHandle) -> None:
    """With Redis unreachable, /readyz is 503 not_ready and the API answers 503 storage_unavailable."""
    with running_service(f"redis://127.0.0.1:{free_port()}/0", sandbox.url) as service:
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
