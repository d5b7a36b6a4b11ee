"""POST /verify: right and wrong codes, attempt limits, and the two concurrency races."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.flows import assert_problem, create, heard_code, wrong_code
from tests.support.sandbox import SandboxHandle
from tests.support.service import ServiceHandle


def test_right_code_approves_once(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """The right code approves; the same code again answers 409 approved."""
    with service.client() as client:
        verification = create(client)
        code = heard_code(sandbox, "0987654321")
        first = client.post("/verify", json={"id": verification["id"], "code": code})
        again = client.post("/verify", json={"id": verification["id"], "code": code})
    assert first.status_code == 200
    assert first.json()["valid"] is True
    assert first.json()["status"] == "approved"
    assert first.json()["id"] == verification["id"]
    assert_problem(again, 409, "approved")


def test_wrong_codes_count_down_to_max_attempts(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """Each wrong code costs one attempt; the fifth ends the verification; the sixth is 409."""
    with service.client() as client:
        verification = create(client)
        wrong = wrong_code(heard_code(sandbox, "0987654321"))
        answers = [
            client.post("/verify", json={"id": verification["id"], "code": wrong}).json() for _ in range(5)
        ]
        sixth = client.post("/verify", json={"id": verification["id"], "code": wrong})
    assert [a["attempts_remaining"] for a in answers] == [4, 3, 2, 1, 0]
    assert all(a["valid"] is False for a in answers)
    assert [a["status"] for a in answers] == ["pending"] * 4 + ["max_attempts_reached"]
    assert_problem(sixth, 409, "max_attempts_reached")


def test_right_code_after_max_attempts_is_refused(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """Once the attempts are spent even the right code is refused."""
    with service.client() as client:
        verification = create(client)
        code = heard_code(sandbox, "0987654321")
        for _ in range(5):
            client.post("/verify", json={"id": verification["id"], "code": wrong_code(code)})
        assert_problem(
            client.post("/verify", json={"id": verification["id"], "code": code}), 409, "max_attempts_reached"
        )


def test_malformed_codes_are_422_and_not_counted(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """A code of the wrong length or alphabet is refused with 422 and costs no attempt."""
    with service.client() as client:
        verification = create(client)
        for code in ("12345", "1234567", "12345a", "١٢٣٤٥٦", "", " 123456"):
            response = client.post("/verify", json={"id": verification["id"], "code": code})
            assert response.status_code == 422, (code, response.text)
            assert response.json()["code"] in ("invalid_code_format", "validation_error")
        after = client.get(f"/otp/{verification['id']}").json()
    assert after["attempts"] == 0


def test_verify_body_validation(service: ServiceHandle) -> None:
    """A verify body without id or code is 422 validation_error."""
    with service.client() as client:
        assert_problem(client.post("/verify", json={"code": "123456"}), 422, "validation_error")
        assert_problem(client.post("/verify", json={"id": "vf_1"}), 422, "validation_error")
        assert_problem(
            client.post("/verify", json={"id": "../../etc", "code": "123456"}), 422, "validation_error"
        )


@pytest.mark.long
async def test_parallel_wrong_guesses_never_exceed_the_limit(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """200 parallel wrong guesses evaluate at most max_attempts codes and end the verification."""
    with service.client() as client:
        verification = create(client)
    wrong = wrong_code(heard_code(sandbox, "0987654321"))
    checks_before = service.hasher.checks
    async with service.async_client() as client:
        answers = await asyncio.gather(
            *(client.post("/verify", json={"id": verification["id"], "code": wrong}) for _ in range(200))
        )
        final = (await client.get(f"/otp/{verification['id']}")).json()
    assert service.hasher.checks - checks_before <= 5
    assert sum(1 for a in answers if a.status_code == 200) <= 5
    assert all(a.status_code in (200, 409) for a in answers)
    assert not any(a.status_code == 200 and a.json()["valid"] for a in answers)
    assert final["attempts"] == 5
    assert final["status"] == "max_attempts_reached"


async def test_hashing_runs_in_the_bounded_pool(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """Hashes and checks run off the event loop, in at most OTP_HASH_WORKERS threads of the pool."""
    async with service.async_client() as client:
        created = await asyncio.gather(
            *(client.post("/otp", json={"phone": f"09123456{n:02d}"}) for n in range(12))
        )
        await asyncio.gather(
            *(client.post("/verify", json={"id": c.json()["id"], "code": "000000"}) for c in created)
        )
    assert service.hasher.threads
    assert all(name.startswith("argon2") for name in service.hasher.threads)
    assert len(service.hasher.threads) <= service.settings.hash_workers


async def test_parallel_right_codes_approve_exactly_once(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """50 parallel submissions of the right code approve exactly once."""
    with service.client() as client:
        verification = create(client)
    code = heard_code(sandbox, "0987654321")
    async with service.async_client() as client:
        answers = await asyncio.gather(
            *(client.post("/verify", json={"id": verification["id"], "code": code}) for _ in range(50))
        )
        final = (await client.get(f"/otp/{verification['id']}")).json()
    approvals = [a for a in answers if a.status_code == 200 and a.json()["valid"]]
    assert len(approvals) == 1
    assert all(a.status_code in (200, 409) for a in answers)
    assert final["status"] == "approved"
    assert final["attempts"] <= 5
