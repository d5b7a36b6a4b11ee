"""Small steps that many API tests share."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from tests.support.sandbox import SandboxHandle

PROBLEM_JSON = "application/problem+json"


def heard_code(sandbox: SandboxHandle, national_phone: str) -> str:
    """The code the sandbox "spoke" in its latest call to this number."""
    calls = sandbox.calls(national_phone)
    assert calls, f"no call was placed to {national_phone}"
    spoken = re.search(r"\d{4,10}", calls[-1]["spoken_text"])
    assert spoken, "the call spoke no code"
    return spoken.group()


def create(client: httpx.Client, phone: str = "0987654321", **fields: Any) -> dict[str, Any]:
    """POST /otp and insist on 201."""
    response = client.post("/otp", json={"phone": phone, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is problem+json with this status and machine-readable code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    for member in ("type", "title", "status", "detail"):
        assert member in body, body
    assert body["status"] == status
    return body


def wrong_code(right: str) -> str:
    """A code of the same length that is not the right one."""
    return "".join(str((int(d) + 1) % 10) for d in right)


class HasClient(Protocol):
    """A running service (in this process, or a ``serve`` process) that hands out API clients."""

    def client(self) -> httpx.Client: ...


class InBackground:
    """One request sent from a thread of its own, so the test can look around while it waits."""

    def __init__(self, service: HasClient, send: Callable[[httpx.Client], httpx.Response]):
        self._answers: list[httpx.Response] = []

        def run() -> None:
            with service.client() as own:
                self._answers.append(send(own))

        self._thread = threading.Thread(target=run)
        self._thread.start()

    @property
    def answered(self) -> bool:
        return not self._thread.is_alive()

    def answer(self, timeout: float = 30) -> httpx.Response:
        """The answer, which must come within ``timeout`` seconds."""
        self._thread.join(timeout=timeout)
        assert self._answers, "the request never answered"
        return self._answers[0]
