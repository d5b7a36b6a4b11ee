"""Checks of the Redis deployment that only the server can answer."""

from __future__ import annotations

from typing import Any

import structlog

from otpservice.adapters.storage.records import text
from otpservice.adapters.storage.scripts import Storage

log = structlog.get_logger(__name__)


async def ping(storage: Storage) -> None:
    """Raise StorageUnavailable unless Redis answers within the storage bound."""
    await storage.call(storage.client.ping, "ping")


async def warn_about_eviction(storage: Storage) -> None:
    """Warn once at start when Redis may evict keys: that silently resets budgets and verifications.

    Managed Redis often forbids CONFIG; then nothing is said.
    """
    try:
        reply: Any = await storage.call(lambda: storage.client.config_get("maxmemory-policy"), "config_get")
    except Exception:  # unreachable (StorageUnavailable) or CONFIG refused: a check that cannot run is silent
        return
    policies = _policies(reply)
    evicting = sorted(p for p in policies if p != "noeviction")
    if evicting:
        log.warning(
            "storage.evicting_policy",
            maxmemory_policy=",".join(evicting),
            advice="set maxmemory-policy noeviction: an evicting Redis drops budgets and verifications",
        )


def _policies(reply: Any) -> set[str]:
    """The policies in a CONFIG GET reply: one server's dict, or a Cluster's dict of node dicts."""
    found: set[str] = set()
    if isinstance(reply, dict):
        for name, value in reply.items():
            if isinstance(value, dict):
                found |= _policies(value)
            elif text(name) == "maxmemory-policy":
                found.add(text(value))
    return found
