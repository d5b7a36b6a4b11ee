"""The happy path end to end: create, hear the code in the sandbox, verify."""

from __future__ import annotations

from tests.support.sandbox import SandboxHandle
from tests.support.service import ServiceHandle


def test_create_then_verify(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """A created verification places a call whose spoken code approves it."""
    with service.client() as client:
        created = client.post("/otp", json={"phone": "0987654321"})
        assert created.status_code == 201, created.text
        print(created.json())
        calls = sandbox.calls("0987654321")
        print(calls)
