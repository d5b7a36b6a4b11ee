"""Abuse and cost budgets: each refuses at exactly its threshold, recovers after its sliding window,
and never charges a call that surely did not leave."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from otpservice.domain.limits import parse_limits
from tests.support.flows import assert_problem, create
from tests.support.sandbox import SandboxHandle
from tests.support.service import running_service


def fresh_number() -> str:
    """A Vietnamese mobile number no other test uses (budgets are per number, range and address)."""
    return f"091{secrets.randbelow(10**7):07d}"


def start(client: httpx.Client, phone: str, **fields: Any) -> httpx.Response:
    return client.post("/otp", json={"phone": phone, **fields})


def start_and_cancel(client: httpx.Client, phone: str, **fields: Any) -> None:
    """A placed call, then the verification out of the way (one pending per number)."""
    client.delete(f"/otp/{create(client, phone, **fields)['id']}")


def test_number_limit_slides_with_no_double_allowance(redis_url: str, sandbox: SandboxHandle) -> None:
    """OTP_PHONE_LIMITS=2/10s: a third call in 10 s is refused; at the window's edge only one more fits."""
    phone = fresh_number()
    with (
        running_service(redis_url, sandbox.url, phone_limits=parse_limits("2/10s")) as service,
        service.client() as client,
    ):
        start_and_cancel(client, phone)  # t=0
        service.clock.advance(9)
        start_and_cancel(client, phone)  # t=9
        refused = start(client, phone)
        assert_problem(refused, 429, "phone_rate_limited")
        assert refused.headers["retry-after"] == "1"  # the first call leaves the window at t=10
        assert "id" not in refused.json()
        service.clock.advance(1)
        start_and_cancel(client, phone)  # t=10: the first call aged out
        # a fixed 10 s window would allow a second call here; the sliding one still sees t=9 and t=10
        assert_problem(start(client, phone), 429, "phone_rate_limited")
        service.clock.advance(9)
        start_and_cancel(client, phone)  # t=19: the call of t=9 aged out
    assert len(sandbox.calls(phone)) == 4


def test_resends_count_against_the_number(redis_url: str, sandbox: SandboxHandle) -> None:
    """A resend is a call to the number like any other: refused once the number's limit is spent."""
    phone = fresh_number()
    with (
        running_service(redis_url, sandbox.url, phone_limits=parse_limits("2/1h")) as service,
        service.client() as client,
    ):
        vid = create(client, phone)["id"]
        service.clock.advance(30)
        assert client.post(f"/otp/{vid}/resend").status_code == 200
        service.clock.advance(30)
        before = client.get(f"/otp/{vid}").json()
        refused = client.post(f"/otp/{vid}/resend")
        assert_problem(refused, 429, "phone_rate_limited")
        assert int(refused.headers["retry-after"]) == 3600 - 60
        after = client.get(f"/otp/{vid}").json()
        assert (after["sends"], after["resend_available_at"]) == (
            before["sends"],
            before["resend_available_at"],
        )
    assert len(sandbox.calls(phone)) == 2


def test_client_address_limit(redis_url: str, sandbox: SandboxHandle) -> None:
    """OTP_CLIENT_IP_LIMITS: one end user's address gets at most its calls, whatever numbers it asks for."""
    address = f"198.51.100.{secrets.randbelow(250)}"
    ipv6 = f"2001:db8:{secrets.randbelow(9999)}::"
    with (
        running_service(redis_url, sandbox.url, client_ip_limits=parse_limits("2/10s")) as service,
        service.client() as client,
    ):
        create(client, fresh_number(), client_ip=address)
        create(client, fresh_number(), client_ip=address)
        refused = start(client, fresh_number(), client_ip=address)
        assert_problem(refused, 429, "client_rate_limited")
        assert refused.headers["retry-after"] == "10"
        create(client, fresh_number(), client_ip="203.0.113.9")
        create(client, fresh_number())  # no address given: not limited by one
        # one IPv6 subscriber holds a /64: its addresses share one allowance
        create(client, fresh_number(), client_ip=ipv6 + "1")
        create(client, fresh_number(), client_ip=ipv6 + "ffff:2")
        assert_problem(start(client, fresh_number(), client_ip=ipv6 + "3"), 429, "client_rate_limited")
        assert_problem(start(client, fresh_number(), client_ip="not-an-address"), 422, "invalid_client_ip")
        service.clock.advance(10)
        create(client, fresh_number(), client_ip=address)


def test_number_range_limit(redis_url: str, sandbox: SandboxHandle) -> None:
    """OTP_PREFIX_LIMITS: numbers sharing all but their last 3 digits share one allowance."""
    prefix = f"091{secrets.randbelow(10**4):04d}"
    with (
        running_service(redis_url, sandbox.url, prefix_limits=parse_limits("2/10s")) as service,
        service.client() as client,
    ):
        create(client, prefix + "001")
        create(client, prefix + "002")
        refused = start(client, prefix + "003")
        assert_problem(refused, 429, "prefix_rate_limited")
        assert not sandbox.calls(prefix + "003")
        service.clock.advance(10)
        # the refusal left nothing behind: the number starts afresh (201, not its pending verification)
        create(client, prefix + "003")


def test_tenant_daily_cap_resets_at_utc_midnight(redis_url: str, sandbox: SandboxHandle) -> None:
    """daily_call_cap: the tenant's calls of one UTC day; refused with Retry-After until midnight UTC."""
    with running_service(redis_url, sandbox.url, daily_call_cap=2) as service, service.client() as client:
        now = service.clock.now()
        tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        service.clock.advance((tomorrow - now).total_seconds() - 3600)  # 23:00 UTC
        create(client, fresh_number())
        create(client, fresh_number())
        refused = start(client, fresh_number())
        assert_problem(refused, 429, "tenant_call_cap_reached")
        assert refused.headers["retry-after"] == "3600"
        service.clock.advance(3600)
        create(client, fresh_number())


def test_global_breaker_trips_visibly(redis_url: str, sandbox: SandboxHandle) -> None:
    """OTP_GLOBAL_CALLS_PER_MINUTE: 503 call_budget_exhausted, counted in metrics and logged as a warning."""
    # the breaker's log is shared by every service on this server: count from a fresh minute window
    with running_service(redis_url, sandbox.url, global_calls_per_minute=2) as service:
        service.clock.advance(7 * 86400)  # a minute no other test has called in
        with service.client() as client:
            create(client, fresh_number())
            create(client, fresh_number())
            refused = start(client, fresh_number())
            body = assert_problem(refused, 503, "call_budget_exhausted")
            assert "id" not in body
            assert int(refused.headers["retry-after"]) == 60
            metrics = client.get("/metrics").text
        assert 'otp_budget_refusals_total{budget="global"}' in metrics
        assert '"call.budget_exhausted"' in service.logs.getvalue()
        service.clock.advance(60)
        with service.client() as client:
            create(client, fresh_number())


def test_calls_that_surely_never_left_are_not_charged(redis_url: str, sandbox: SandboxHandle) -> None:
    """Numbers the provider refuses spend no range, address or tenant budget."""
    one = parse_limits("1/1h")
    with (
        running_service(
            redis_url, sandbox.url, prefix_limits=one, client_ip_limits=one, daily_call_cap=1
        ) as service,
        service.client() as client,
    ):
        for _ in range(3):  # the sandbox refuses 0900000008 ("Blacklist")
            assert_problem(start(client, "0900000008", client_ip="192.0.2.8"), 422, "provider_rejected")
        create(client, fresh_number(), client_ip="192.0.2.8")


def test_parallel_starts_never_answer_a_verification_that_a_budget_refused(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """With the tenant's cap spent, parallel starts all get 429: none is told of a pending verification
    that will never ring."""
    with running_service(redis_url, sandbox.url, daily_call_cap=1) as service, service.client() as client:
        client.delete(f"/otp/{create(client, fresh_number())['id']}")
        phone = fresh_number()

        async def race() -> list[int]:
            async with service.async_client() as parallel:
                answers = await asyncio.gather(
                    *(parallel.post("/otp", json={"phone": phone}) for _ in range(10))
                )
            return [answer.status_code for answer in answers]

        assert asyncio.run(race()) == [429] * 10
    assert not sandbox.calls(phone)


def test_the_longest_refusal_is_the_one_answered(redis_url: str, sandbox: SandboxHandle) -> None:
    """When several budgets refuse, the answer names the one that refuses longest, so its Retry-After
    is surely enough."""
    prefix = f"091{secrets.randbelow(10**4):04d}"
    with (
        running_service(
            redis_url, sandbox.url, prefix_limits=parse_limits("1/10s"), daily_call_cap=1
        ) as service,
        service.client() as client,
    ):
        create(client, prefix + "001")
        refused = start(client, prefix + "002")
        assert_problem(refused, 429, "tenant_call_cap_reached")
        assert int(refused.headers["retry-after"]) > 10
