"""The failure lock: too many wrong codes for one number, across its verifications, lock the number."""

from __future__ import annotations

import asyncio
import secrets

from otpservice.domain.limits import parse_limits
from tests.support.flows import assert_problem, create, heard_code, wrong_code
from tests.support.sandbox import SandboxHandle
from tests.support.service import running_service


def test_wrong_codes_across_verifications_lock_the_number(redis_url: str, sandbox: SandboxHandle) -> None:
    """OTP_PHONE_FAILURE_LOCK=3/5m: the third wrong code locks starts, resends (429) and checks (409)."""
    phone = f"095{secrets.randbelow(10**7):07d}"
    lock = parse_limits("3/5m")
    with (
        running_service(redis_url, sandbox.url, failure_lock=lock, ttl_seconds=600) as service,
        service.client() as client,
    ):
        first = create(client, phone)["id"]
        code = heard_code(sandbox, phone)
        for _ in range(2):
            client.post("/verify", json={"id": first, "code": wrong_code(code)})
        client.delete(f"/otp/{first}")
        service.clock.advance(60)
        second = create(client, phone)["id"]
        code = heard_code(sandbox, phone)
        assert client.post("/verify", json={"id": second, "code": wrong_code(code)}).json()["valid"] is False
        checked = client.post("/verify", json={"id": second, "code": code})
        body = assert_problem(checked, 409, "phone_locked")
        assert body["locked_until"]
        assert int(checked.headers["retry-after"]) == 240  # the first wrong code leaves the window at 5 min
        assert client.get(f"/otp/{second}").json()["attempts"] == 1  # the refused check spent nothing
        assert_problem(client.post("/otp", json={"phone": phone}), 429, "phone_locked")
        service.clock.advance(30)
        assert_problem(client.post(f"/otp/{second}/resend"), 429, "phone_locked")
        service.clock.advance(210)
        assert client.post("/verify", json={"id": second, "code": code}).json()["valid"] is True
    assert len(sandbox.calls(phone)) == 2


def test_the_lock_is_per_tenant(redis_url: str, sandbox: SandboxHandle) -> None:
    """Another tenant's wrong codes do not lock a number for this tenant."""
    phone = f"095{secrets.randbelow(10**7):07d}"
    lock = parse_limits("1/1h")
    with running_service(redis_url, sandbox.url, failure_lock=lock) as noisy, noisy.client() as client:
        vid = create(client, phone)["id"]
        client.post("/verify", json={"id": vid, "code": wrong_code(heard_code(sandbox, phone))})
        assert_problem(client.post("/otp", json={"phone": phone}), 429, "phone_locked")
    with running_service(redis_url, sandbox.url, failure_lock=lock) as other, other.client() as client:
        create(client, phone)


def test_parallel_guesses_cannot_slip_under_the_lock(redis_url: str, sandbox: SandboxHandle) -> None:
    """Guesses sent all at once count towards the lock while being checked: at most the lock's count
    are judged, the rest are refused without being checked."""
    phone = f"095{secrets.randbelow(10**7):07d}"
    lock = parse_limits("3/1h")
    with running_service(redis_url, sandbox.url, failure_lock=lock, max_attempts=10) as service:
        with service.client() as client:
            vid = create(client, phone)["id"]
            wrong = wrong_code(heard_code(sandbox, phone))

        async def guess_all() -> list[int]:
            async with service.async_client() as client:
                answers = await asyncio.gather(
                    *(client.post("/verify", json={"id": vid, "code": wrong}) for _ in range(10))
                )
            return [answer.status_code for answer in answers]

        statuses = asyncio.run(guess_all())
        with service.client() as client:
            assert client.get(f"/otp/{vid}").json()["attempts"] <= 3
            assert_problem(client.post("/verify", json={"id": vid, "code": wrong}), 409, "phone_locked")
    assert statuses.count(200) <= 3
    assert set(statuses) <= {200, 409}
