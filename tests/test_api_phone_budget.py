"""The toll-fraud budget: a number gets at most OTP_PHONE_CALLS_PER_HOUR calls, whatever asks."""

from __future__ import annotations

from tests.support.flows import assert_problem, create
from tests.support.sandbox import SandboxHandle
from tests.support.service import running_service

PHONE = "0912000111"


def test_number_budget_limits_creates_and_resends(redis_url: str, sandbox: SandboxHandle) -> None:
    """The third call to a number within the hour is refused with 429 and places nothing."""
    with (
        running_service(redis_url, sandbox.url, phone_calls_per_hour=2) as service,
        service.client() as client,
    ):
        # 10 s into a fresh clock hour, so the whole test stays in one window
        service.clock.advance(3600 + 3600 - service.clock.now().timestamp() % 3600 + 10)
        first = create(client, PHONE)
        create(client, PHONE)
        refused = client.post("/otp", json={"phone": PHONE})
        body = assert_problem(refused, 429, "phone_rate_limited")
        assert abs(int(refused.headers["retry-after"]) - 3590) <= 1  # the end of the window, not a fresh hour
        assert "id" not in body
        assert len(sandbox.calls(PHONE)) == 2
        service.clock.advance(30)
        before = client.get(f"/otp/{first['id']}").json()["resend_available_at"]
        assert_problem(client.post(f"/otp/{first['id']}/resend"), 429, "phone_rate_limited")
        assert client.get(f"/otp/{first['id']}").json()["resend_available_at"] == before
        assert client.post("/otp", json={"phone": "0912000112"}).status_code == 201
        service.clock.advance(3600)
        assert client.post(f"/otp/{first['id']}/resend").status_code == 409  # expired by now, not limited
        create(client, PHONE)
