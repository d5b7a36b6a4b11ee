"""One pending verification per number per tenant: a repeated start answers the pending one."""

from __future__ import annotations

import asyncio
import secrets

from tests.support.flows import assert_problem, create
from tests.support.sandbox import SandboxHandle
from tests.support.service import ServiceHandle


def _number() -> str:
    return f"093{secrets.randbelow(10**7):07d}"


def test_a_second_start_answers_the_pending_verification(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """Within the cooldown a start for a pending number answers 200 with the same id and places no call."""
    phone = _number()
    with service.client() as client:
        first = create(client, phone)
        service.clock.advance(5)
        again = client.post("/otp", json={"phone": phone})
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first["id"]
        assert again.json()["sends"] == 1
    assert len(sandbox.calls(phone)) == 1


def test_a_start_after_the_cooldown_calls_again_as_a_resend(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """Once the cooldown passed, a start for a pending number places a new call on that verification."""
    phone = _number()
    with service.client() as client:
        first = create(client, phone)
        service.clock.advance(service.settings.resend_cooldown_seconds)
        again = client.post("/otp", json={"phone": phone})
        assert again.status_code == 200, again.text
        assert (again.json()["id"], again.json()["sends"]) == (first["id"], 2)
        service.clock.advance(1)
        assert client.post("/otp", json={"phone": phone}).json()["sends"] == 2  # cooldown again
    assert len(sandbox.calls(phone)) == 2


def test_a_verification_that_ended_frees_the_number(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """After a cancel (or any end) the next start creates a new verification (201, new id)."""
    phone = _number()
    with service.client() as client:
        first = create(client, phone)
        client.delete(f"/otp/{first['id']}")
        second = create(client, phone)
    assert second["id"] != first["id"]
    assert len(sandbox.calls(phone)) == 2


def test_twenty_parallel_starts_place_one_call(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """20 concurrent starts for one number create one verification, place one call and share its id."""
    phone = _number()

    async def race() -> list[tuple[int, str]]:
        async with service.async_client() as client:
            answers = await asyncio.gather(*(client.post("/otp", json={"phone": phone}) for _ in range(20)))
        return [(answer.status_code, answer.json()["id"]) for answer in answers]

    answers = asyncio.run(race())
    assert sorted(status for status, _ in answers) == [200] * 19 + [201]
    assert len({vid for _, vid in answers}) == 1
    assert len(sandbox.calls(phone)) == 1


def test_bad_input_for_a_pending_number_changes_nothing(service: ServiceHandle) -> None:
    """A start with invalid fields is refused before the pending verification is looked at."""
    phone = _number()
    with service.client() as client:
        first = create(client, phone)
        assert_problem(client.post("/otp", json={"phone": phone, "code_length": 99}), 422, "validation_error")
        assert client.get(f"/otp/{first['id']}").json()["sends"] == 1
