"""The repair queue: writes retried in the background, and what a shutdown does to those left."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import REGISTRY

from otpservice.domain.errors import StorageUnavailable, VerificationNotFound
from otpservice.logs import configure_logging
from otpservice.service.repairs import RepairQueue


async def _logged_closing(
    repairs: RepairQueue, what: str, write: Callable[[], Awaitable[None]], grace_seconds: float
) -> list[dict[str, Any]]:
    """Submit ``write`` for verification vf_x, close the queue; the log lines written meanwhile."""
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        repairs.submit(what, write, verification_id="vf_x")
        await repairs.close(grace_seconds=grace_seconds)
    finally:
        configure_logging("INFO")
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_repair_still_failing_at_shutdown_is_logged_as_abandoned() -> None:
    """A repair storage still refuses when the queue closes is stopped with a line naming it (most
    repairs nothing else retries, so an operator must be able to see what was lost)."""

    async def storage_down() -> None:
        raise StorageUnavailable()

    repairs = RepairQueue(first_delay=0.01, max_delay=0.02)
    lines = await _logged_closing(repairs, "void_create", storage_down, grace_seconds=0.1)
    abandoned = [line for line in lines if line.get("event") == "repair.abandoned"]
    assert [(a["repair"], a["verification_id"], a["reason"]) for a in abandoned] == [
        ("void_create", "vf_x", "shutdown")
    ]
    assert repairs.pending == 0


async def test_a_repair_whose_record_storage_lost_is_counted_not_reported_as_a_bug() -> None:
    """A repair that finds its verification gone (a failover or restart lost the last writes) stops
    with a warning naming it and a count, not an error with a traceback."""

    async def record_gone() -> None:
        raise VerificationNotFound("vf_x")

    before = REGISTRY.get_sample_value("otp_records_lost_total", {"write": "record_placed_call"}) or 0
    repairs = RepairQueue(first_delay=0.01, max_delay=0.02)
    lines = await _logged_closing(repairs, "record_placed_call", record_gone, grace_seconds=1)
    assert [(line["event"], line["level"], line["verification_id"]) for line in lines] == [
        ("repair.record_lost", "warning", "vf_x")
    ]
    after = REGISTRY.get_sample_value("otp_records_lost_total", {"write": "record_placed_call"})
    assert after == before + 1
