"""Idempotency-Key: a retried start or resend gets the first answer and places no second call."""

from __future__ import annotations

import asyncio
import secrets

from otpservice.domain.limits import parse_limits
from tests.support.flows import assert_problem, create
from tests.support.sandbox import SandboxHandle
from tests.support.service import ServiceHandle, running_service


def _number() -> str:
    return f"094{secrets.randbelow(10**7):07d}"


def _key() -> dict[str, str]:
    return {"Idempotency-Key": "retry-" + secrets.token_hex(8)}


def test_a_repeat_replays_the_first_answer(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """The same key and body answer the same status and body, marked as replayed, with one call placed."""
    phone, key = _number(), _key()
    with service.client() as client:
        first = client.post("/otp", json={"phone": phone}, headers=key)
        service.clock.advance(60)  # past the cooldown: a plain repeat would call again
        again = client.post("/otp", json={"phone": phone}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert len(sandbox.calls(phone)) == 1


def test_the_same_fields_in_another_order_are_the_same_request(service: ServiceHandle) -> None:
    """A repeat whose JSON lists the same fields in another order is replayed, not refused."""
    phone, key = _number(), _key()
    with service.client() as client:
        first = client.post("/otp", json={"phone": phone, "metadata": {"a": 1, "b": 2}}, headers=key)
        again = client.post("/otp", json={"metadata": {"b": 2, "a": 1}, "phone": phone}, headers=key)
    assert (again.status_code, again.content) == (first.status_code, first.content)


def test_a_key_reused_with_another_body_is_refused(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """The same key with a different body answers 422 idempotency_key_reused and places nothing."""
    key = _key()
    with service.client() as client:
        client.post("/otp", json={"phone": _number()}, headers=key)
        other = _number()
        assert_problem(client.post("/otp", json={"phone": other}, headers=key), 422, "idempotency_key_reused")
    assert not sandbox.calls(other)


def test_keys_are_scoped_per_route_and_resend_is_idempotent(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """A resend repeated with its key is replayed; the key does not collide with a start's."""
    phone, key = _number(), _key()
    with service.client() as client:
        vid = create(client, phone)["id"]
        service.clock.advance(30)
        first = client.post(f"/otp/{vid}/resend", headers=key)
        service.clock.advance(30)
        again = client.post(f"/otp/{vid}/resend", headers=key)
        assert (first.status_code, again.content) == (200, first.content)
        assert_problem(client.post("/otp", json={"phone": phone}, headers=key), 422, "idempotency_key_reused")
    assert len(sandbox.calls(phone)) == 2


def test_twenty_concurrent_requests_with_one_key_place_one_call(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """Concurrent requests with one key place exactly one call; every answer is that call's, or 409."""
    phone, key = _number(), _key()

    async def race() -> list[tuple[int, bytes]]:
        async with service.async_client() as client:
            answers = await asyncio.gather(
                *(client.post("/otp", json={"phone": phone}, headers=key) for _ in range(20))
            )
        return [(answer.status_code, answer.content) for answer in answers]

    answers = asyncio.run(race())
    created = [body for status, body in answers if status == 201]
    assert created
    assert all(body == created[0] for body in created)
    assert all(status in (201, 409) for status, _ in answers)
    assert len(sandbox.calls(phone)) == 1


def test_a_refusal_is_not_kept(redis_url: str, sandbox: SandboxHandle) -> None:
    """An answer that changed nothing (a budget refusal) lets the key go: the repeat runs again."""
    phone, key = _number(), _key()
    one_call = parse_limits("1/10s")
    with (
        running_service(redis_url, sandbox.url, phone_limits=one_call) as service,
        service.client() as client,
    ):
        client.delete(f"/otp/{create(client, phone)['id']}")
        assert_problem(client.post("/otp", json={"phone": phone}, headers=key), 429, "phone_rate_limited")
        service.clock.advance(10)
        assert client.post("/otp", json={"phone": phone}, headers=key).status_code == 201


def test_a_malformed_key_is_a_validation_error(service: ServiceHandle) -> None:
    """An Idempotency-Key longer than 255 characters is refused as a validation error."""
    with service.client() as client:
        response = client.post("/otp", json={"phone": _number()}, headers={"Idempotency-Key": "x" * 256})
        assert_problem(response, 422, "validation_error")


def test_two_idempotency_keys_on_one_request_are_refused(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """A request carrying two Idempotency-Key headers is 422 validation_error naming the header, and
    places no call (one key would silently have been dropped)."""
    phone = _number()
    with service.client() as client:
        two_keys = [("Idempotency-Key", "k-one"), ("Idempotency-Key", "k-two")]
        refused = client.post("/otp", json={"phone": phone}, headers=two_keys)
    problem = assert_problem(refused, 422, "validation_error")
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert sandbox.calls(phone) == []
